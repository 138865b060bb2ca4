"""Writing JSONL output: one line per record, the output file (``--resume`` keeps its complete lines)."""

from __future__ import annotations

import functools
import json
import math
import os
import sys
from typing import IO, Any, Dict, Optional, Sequence, Tuple

from rmclient import jsonsafe

from .exits import InputError
from .reading import iter_records, source_name

__all__ = ["dumps", "json_float", "check_output", "open_output", "check_resume", "write_lines"]

def dumps(data: Dict[str, Any]) -> bytes:
    """One JSONL line, UTF-8; a line holding text no UTF-8 can carry (a lone surrogate copied from the
    input) is written with ``\\u`` escapes instead, so that it is still valid JSON."""
    text = json.dumps(data, ensure_ascii=False, allow_nan=False)
    try:
        return (text + "\n").encode("utf-8")
    except UnicodeEncodeError:
        return (json.dumps(data, ensure_ascii=True, allow_nan=False) + "\n").encode("ascii")


def json_float(x: Optional[float]) -> Optional[float]:
    """A reward for JSON: NaN (a failed sample under ``--on-error nan``) becomes ``null``."""
    return None if x is None or math.isnan(x) else float(x)


def check_output(path: Optional[str], input_path: Optional[str]) -> None:
    """An :class:`InputError` when the output ``path`` is the input file (writing it would destroy the input)."""
    if not path or path == "-" or not input_path or input_path == "-":
        return
    try:
        same = os.path.exists(path) and os.path.samefile(input_path, path)
    except OSError:
        return
    if same:
        raise InputError("the output file is the input file")


def open_output(path: str, *, resume: bool, input_path: Optional[str] = None) -> Tuple[IO[bytes], int]:
    """``(file, lines already complete)``. With ``resume`` a partial last line is cut off.

    Refuses (:class:`InputError`) an output that is ``input_path``, before anything is truncated.
    """
    check_output(path, input_path)
    if path == "-":
        if resume:
            raise InputError("--resume needs an output file, not stdout")
        return sys.stdout.buffer, 0
    if os.path.isdir(path):
        raise InputError(f"{path}: is a directory")
    try:
        if not (resume and os.path.exists(path)):
            return open(path, "wb"), 0
        f = open(path, "r+b")
    except OSError as exc:
        raise InputError(f"cannot write {path}: {exc.strerror or exc}") from exc
    done, end, pos = 0, 0, 0
    for block in iter(functools.partial(f.read, 1 << 20), b""):
        done += block.count(b"\n")
        last = block.rfind(b"\n")
        if last >= 0:
            end = pos + last + 1
        pos += len(block)
    f.seek(end)
    f.truncate()
    return f, done


def check_resume(input_path: str, output_path: str, kept: int) -> None:
    """The ``kept`` lines of the output carry the input lines they were made from (every input field,
    plus what the command added): an :class:`InputError` naming the first input line that is not the
    one kept, so that ``--resume`` never keeps scores of samples that have since changed."""
    with open(output_path, "rb") as out:
        for k, (record, raw) in enumerate(zip(iter_records(input_path), out), 1):
            if k > kept:
                return
            try:
                kept_row = jsonsafe.loads(raw)
            except ValueError:
                kept_row = None
            if not isinstance(kept_row, dict) or any(
                key not in kept_row or kept_row[key] != value for key, value in record.data.items()
            ):
                raise InputError(
                    f"--resume: {source_name(input_path)} line {record.line} is not the sample kept as line {k} of "
                    f"{output_path}: the input changed since that run. Rerun without --resume to score it again"
                )


def write_lines(out: Optional[IO[bytes]], rows: Sequence[Dict[str, Any]]) -> None:
    """``rows`` as JSONL lines on ``out`` (nothing when ``out`` is ``None``), flushed."""
    if out is not None and rows:
        out.write(b"".join(dumps(row) for row in rows))
        out.flush()
