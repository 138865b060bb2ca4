"""The matrix table (markdown) from ``tests/matrix/vllm.sh``'s ``<version>.json`` results.

    python tests/matrix/report.py RESULTS_DIR > RESULTS_DIR/vllm.md
    python tests/matrix/report.py --kinds RESULTS_DIR > RESULTS_DIR/vllm-kinds.md   # vllm_check.py --kinds
"""

from __future__ import annotations

import json
import re
import sys
from datetime import date
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


KIND_COLUMNS = [("prm", "PRM (`score_steps`)"), ("multilabel", "multi-label (`score_vector`)"),
                ("dense", "dense (`score_tokens`)")]


def _why(message: str) -> str:
    """A refusal in a few words: its reason after the version's name, up to the first parenthesis."""
    reason = message.split(": ", 1)[1] if ": " in message else message
    reason = re.sub(r"^vLLM [\d.]+ ", "", re.split(r" \(|\. ", reason)[0])
    return reason if len(reason) <= 70 else reason[:67] + "..."


def kind_cell(result: dict) -> str:
    status = result["status"]
    text = {"raw": lambda: f"raw ({result['max_diff']:.0e})",
            "refused": lambda: f"refused ({result['by']}: {_why(result['message'])})"}.get(status, lambda: "**FAIL**")()
    return text if status == result["expected"] else f"{text} (table: {result['expected']})"


def kinds(results_dir: str, command: str) -> None:
    reports = [json.loads(p.read_text()) for p in Path(results_dir).glob("*.json")]
    reports = sorted((r for r in reports if "kinds" in r), key=lambda r: Version(r["version"]))
    print(f"vLLM on CPU, {date.today().isoformat()}: `{command}`")
    print()
    print("| vLLM | " + " | ".join(title for _, title in KIND_COLUMNS) + " | check |")
    print("|---" * (len(KIND_COLUMNS) + 2) + "|")
    notes = []
    for r in reports:
        by_kind = {x["kind"]: x for x in r["kinds"]}
        cells = [kind_cell(by_kind[k]) if k in by_kind else "-" for k, _ in KIND_COLUMNS]
        print(f"| {r['version']} | " + " | ".join(cells) + f" | {r['seconds']} s |")
        for x in r["kinds"]:
            if x["status"] == "FAIL" or x["status"] != x["expected"]:
                notes.append(f"{r['version']} {x['kind']}: {x.get('why') or x.get('message')}")
    print()
    print("raw (d): through rmclient's launcher (the table row's flags) and client, on real CPU servers: "
          "PRM step rewards equal softmax(logits)[1] of the in-process forward pass at each step token, "
          "multi-label vectors equal transformers' logits, dense rewards equal the head at each output token; "
          "d = the largest |difference| (tolerance 1e-4). refused: the launcher or the client raised "
          "ConfigurationError (the reason, shortened). (table: X): the version's TABLE row says X.")
    if notes:
        print()
        print("Failures and differences from the table:")
        for line in notes:
            print(f"- {line}")


if __name__ == "__main__":
    if sys.argv[1] == "--kinds":
        kinds(sys.argv[2], " ".join(sys.argv[3:]) or "tests/matrix/vllm_check.py VENV --only --kinds")
    else:
        main(sys.argv[1])
