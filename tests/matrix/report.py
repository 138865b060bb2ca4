"""The matrix table (markdown) from ``tests/matrix/vllm.sh``'s ``<version>.json`` results.

    python tests/matrix/report.py RESULTS_DIR > RESULTS_DIR/vllm.md
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from packaging.version import Version

COLUMNS = [("llama-seq-cls", "Llama seq-cls (POLAR-like)"), ("qwen2-seq-cls", "Qwen2 seq-cls"),
           ("internlm2-rm", "InternLM2ForRewardModel"), ("qwen2-rm", "Qwen2ForRewardModel")]


def cell(result: dict) -> str:
    status = result["status"]
    if status == "raw":
        return f"raw ({max(result['max_diff_ids'], result['max_diff_text']):.0e})"
    if status == "refused":
        return "refused" + (" (engine fails)" if "engine fails" in result.get("client", "") else "")
    return f"**{status}**"


def main(results_dir: str) -> None:
    reports = [json.loads(p.read_text()) for p in Path(results_dir).glob("*.json")]
    reports.sort(key=lambda r: Version(r["version"]))
    print("| vLLM | " + " | ".join(title for _, title in COLUMNS) + " | install | check |")
    print("|---" * (len(COLUMNS) + 3) + "|")
    failures = []
    for r in reports:
        by_model = {x["model"]: x for x in r["results"]}
        cells = [cell(by_model[m]) if m in by_model else "-" for m, _ in COLUMNS]
        if r.get("install_failed"):
            cells = ["**install failed**"] * len(COLUMNS)
        timing = [f"{r['install_s']} s" if "install_s" in r else "-", f"{r['check_s']} s" if "check_s" in r else "-"]
        print(f"| {r['version']} | " + " | ".join(cells + timing) + " |")
        failures += [f"{r['version']} {x['model']}: {x.get('why')}" for x in r["results"] if x["status"] == "FAIL"]
    print()
    print("raw (d): rewards through rmclient's launcher and client, by token ids and by text, equal the "
          "in-process forward pass of the same ids; d = the largest |difference|. refused: rmclient's "
          "launcher refuses, and its client refuses a server started without it (engine fails: that "
          "server does not even start).")
    if failures:
        print()
        print("Failures:")
        for line in failures:
            print(f"- {line}")


if __name__ == "__main__":
    main(sys.argv[1])
