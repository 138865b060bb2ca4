"""``rmclient best-of-n GROUPS.jsonl -o OUT.jsonl``: the best of N outputs per prompt."""

from __future__ import annotations

import argparse
import math
import sys
from typing import Any, Dict, List, Optional

from .exits import EXIT_CODES_HELP, EXIT_OK, InputError
from .parsers import add_subcommand
from .reading import Record
from .scoring import renamed
from .stream import add_stream_arguments, stream
from .writing import json_float, write_lines

DESCRIPTION = """\
Pick the best of N candidate outputs for each prompt (best-of-N / rejection
sampling).

Each line is {"prompt", "outputs": [...]} plus "reference" for POLAR models;
the outputs are strings or lists of {"role", "content"} messages. Every output
is scored against the line's prompt (and reference), and the line is written
with all its fields plus "rewards" (one per output, in order), "best_index"
(the first highest reward) and "best_output". Streams like `rmclient score`,
in chunks of --chunk-size lines, and continues an interrupted run with
--resume."""

EPILOG = f"""\
examples:
  rmclient best-of-n groups.jsonl -o best.jsonl --model internlm/POLAR-7B --trust-remote-code
  rmclient best-of-n groups.jsonl -o best.jsonl --model /models/rm --backend sglang@127.0.0.1:30000

{EXIT_CODES_HELP}"""


def register(sub: "argparse._SubParsersAction") -> argparse.ArgumentParser:
    p = add_subcommand(sub, "best-of-n", summary="pick the best of N outputs per prompt",
                       description=DESCRIPTION, epilog=EPILOG)
    p.add_argument("input", metavar="GROUPS.jsonl", help="one prompt and its outputs per line ('-' for stdin)")
    p.add_argument("-o", "--output", required=True, metavar="OUT.jsonl",
                   help="where the lines go, with rewards, best_index and best_output ('-' for stdout)")
    p.add_argument("--resume", action="store_true",
                   help="keep the complete lines OUT already holds and process only the lines after them")
    return add_stream_arguments(p, run, on_error="a failed output gets a null reward and is never picked; exit 0")


def group_samples(record: Record) -> List[Dict[str, Any]]:
    """One sample per output of a line."""
    d = record.data
    outputs = d.get("outputs")
    if outputs is None:
        raise InputError(f"line {record.line}, field 'outputs': missing")
    if not isinstance(outputs, list):
        raise InputError(
            f"line {record.line}, field 'outputs': expected a list of outputs, got {type(outputs).__name__}"
        )
    if not outputs:
        raise InputError(f"line {record.line}, field 'outputs': empty, nothing to choose from")
    if d.get("prompt") is None:
        raise InputError(f"line {record.line}, field 'prompt': missing")
    base = {k: d[k] for k in ("prompt", "reference", "wrapper") if k in d}
    return [{**base, "output": o} for o in outputs]


def best(rewards: List[float]) -> Optional[int]:
    """Index of the first highest reward, ignoring NaN; ``None`` when all are NaN."""
    index: Optional[int] = None
    for i, r in enumerate(rewards):
        if not math.isnan(r) and (index is None or r > rewards[index]):
            index = i
    return index


def run(args: argparse.Namespace) -> int:
    done = stream(args, desc="best-of-n", samples_of=group_samples, write=_write,
                  field_of=lambda record, j, f: renamed(f, f"outputs[{j}]"), nan_effect="give them null rewards")
    print(f"picked the best output of {done.lines:,} prompts in {done.seconds:.1f}s -> {done.destination}",
          file=sys.stderr)
    return EXIT_OK


def _write(out: Any, records: List[Record], rewards: List[float], scored: List[Any]) -> None:
    rows = []
    pos = 0
    for record in records:
        n = len(record.data["outputs"])
        mine = rewards[pos : pos + n]
        pos += n
        index = best(mine)
        rows.append({
            **record.data,
            "rewards": [json_float(r) for r in mine],
            "best_index": index,
            "best_output": None if index is None else record.data["outputs"][index],
        })
    write_lines(out, rows)
