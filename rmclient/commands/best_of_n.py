"""``rmclient best-of-n GROUPS.jsonl -o OUT.jsonl``: the best of N outputs per prompt."""

from __future__ import annotations

import argparse
import math
import sys
import time
from typing import Any, Dict, List, Optional, Tuple

from .common import (
    CHUNK_LINES,
    EXIT_CODES_HELP,
    EXIT_OK,
    InputError,
    PartialScore,
    Progress,
    Record,
    add_backend_arguments,
    add_on_error_argument,
    add_progress_arguments,
    check_input,
    count_records,
    dumps,
    formatter,
    guarded,
    iter_chunks,
    iter_records,
    json_float,
    make_client,
    open_output,
    score_samples,
    selected_backend,
)

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


HINT = (
    "The lines before them are written: fix the cause and rerun with --resume, or pass --on-error nan "
    "to give them null rewards"
)


def register(sub: "argparse._SubParsersAction") -> argparse.ArgumentParser:
    p = sub.add_parser(
        "best-of-n", help="pick the best of N outputs per prompt",
        description=DESCRIPTION, epilog=EPILOG, formatter_class=formatter,
    )
    p.add_argument("input", metavar="GROUPS.jsonl", help="one prompt and its outputs per line ('-' for stdin)")
    p.add_argument("-o", "--output", required=True, metavar="OUT.jsonl",
                   help="where the lines go, with rewards, best_index and best_output ('-' for stdout)")
    p.add_argument("--resume", action="store_true",
                   help="keep the complete lines OUT already holds and process only the lines after them")
    p.add_argument("--chunk-size", type=int, default=CHUNK_LINES, metavar="N",
                   help="lines read, scored and written at a time (default: %(default)s)")
    add_on_error_argument(p, "a failed output gets a null reward and is never picked; exit 0")
    add_progress_arguments(p)
    add_backend_arguments(p)
    p.set_defaults(func=guarded(run))
    return p


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
    backend = selected_backend(args)
    if args.chunk_size < 1:
        raise InputError(f"--chunk-size must be at least 1, got {args.chunk_size}")
    check_input(args.input)
    client = make_client(args, backend, on_error=args.on_error)
    out, done = open_output(args.output, resume=args.resume)
    if done:
        print(f"resuming: {args.output} already holds {done:,} lines", file=sys.stderr)
    started = time.monotonic()
    lines_done = 0
    progress = Progress(count_records(args.input), desc="best-of-n", enabled=args.progress, initial=done)
    try:
        for chunk, bad_line in iter_chunks(iter_records(args.input, skip=done), args.chunk_size):
            samples: List[Dict[str, Any]] = []
            owner: List[Tuple[int, int]] = []  # sample -> (record in chunk, output index)
            for k, record in enumerate(chunk):
                try:
                    group = group_samples(record)
                except InputError as exc:  # score and write the lines before it first
                    bad_line, chunk = exc, chunk[:k]
                    break
                samples += group
                owner += [(k, j) for j in range(len(group))]

            def where(i: int, f: str) -> Tuple[int, str]:
                k, j = owner[i]
                if f == "output" or f.startswith("output[") or f.startswith("output."):
                    f = f"outputs[{j}]" + f[len("output"):]
                return chunk[k].line, f

            try:
                rewards = score_samples(client, samples, where, hint=HINT)
            except PartialScore as partial:
                complete = owner[len(partial.rewards)][0] if len(partial.rewards) < len(owner) else len(chunk)
                _write(out, chunk[:complete], partial.rewards)
                raise partial.error from None
            _write(out, chunk, rewards)
            lines_done += len(chunk)
            progress.update(len(chunk))
            if bad_line is not None:
                raise bad_line
        progress.finish()
    finally:
        progress.close()
        if out is not sys.stdout.buffer:
            out.close()
        client.close()
    where_to = "stdout" if args.output == "-" else args.output
    print(f"picked the best output of {lines_done:,} prompts in {time.monotonic() - started:.1f}s -> {where_to}",
          file=sys.stderr)
    return EXIT_OK


def _write(out: Any, records: List[Record], rewards: List[float]) -> None:
    lines = []
    pos = 0
    for record in records:
        n = len(record.data["outputs"])
        mine = rewards[pos : pos + n]
        pos += n
        index = best(mine)
        lines.append(dumps({
            **record.data,
            "rewards": [json_float(r) for r in mine],
            "best_index": index,
            "best_output": None if index is None else record.data["outputs"][index],
        }))
    if lines:
        out.write(b"".join(lines))
        out.flush()
