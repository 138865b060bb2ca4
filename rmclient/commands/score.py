"""``rmclient score IN.jsonl -o OUT.jsonl``: add a reward to every line of a JSONL file, streaming."""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from typing import List

from .common import (
    CHUNK_LINES,
    EXIT_CODES_HELP,
    EXIT_OK,
    InputError,
    PartialScore,
    Progress,
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
Score every line of a JSONL file and write it out with all its fields plus the reward.

Each line is one sample, POLAR style {"prompt", "reference", "output"} or
outcome-RM style {"prompt", "output"} or {"messages": [...]}; prompt, reference
and output are strings or lists of {"role", "content"} messages. Other fields
are copied unchanged. The file is read and scored in chunks of --chunk-size
lines and each chunk is written, in input order, as soon as it is done: memory
stays bounded whatever the size of the file, and an interrupted run continues
with --resume, without rescoring what OUT already holds.

A malformed line stops the run with its line number and field (exit 2); a
sample the backend cannot score stops it with the failed lines (exit 1). In
both cases every line before it is scored and written, so --resume picks up
from there once the cause is fixed."""

EPILOG = f"""\
examples:
  rmclient score data.jsonl -o scored.jsonl --model internlm/POLAR-7B --trust-remote-code
  rmclient score data.jsonl -o scored.jsonl --model /models/rm --backend vllm@10.0.0.1:8000,10.0.0.2:8000
  rmclient score data.jsonl -o scored.jsonl --model /models/rm --backend sglang \\
      --server-address http://127.0.0.1:30000 --resume        # after an interruption
  cat data.jsonl | rmclient score - -o - --model /models/rm --reward-field score > scored.jsonl

{EXIT_CODES_HELP}"""


HINT = (
    "The lines before them are written: fix the cause and rerun with --resume, or pass --on-error nan "
    "to write null for them"
)


def register(sub: "argparse._SubParsersAction") -> argparse.ArgumentParser:
    p = sub.add_parser(
        "score", help="add a reward to every line of a JSONL file (streaming, resumable)",
        description=DESCRIPTION, epilog=EPILOG, formatter_class=formatter,
    )
    p.add_argument("input", metavar="IN.jsonl", help="samples, one JSON object per line ('-' for stdin)")
    p.add_argument("-o", "--output", required=True, metavar="OUT.jsonl",
                   help="where the scored lines go ('-' for stdout); replaced unless --resume")
    p.add_argument("--resume", action="store_true",
                   help="keep the complete lines OUT already holds (a cut-off last line is dropped) "
                        "and score only the lines after them")
    p.add_argument("--reward-field", default="reward", metavar="NAME",
                   help="name of the field added to each line (default: %(default)s)")
    p.add_argument("--chunk-size", type=int, default=CHUNK_LINES, metavar="N",
                   help="lines read, scored and written at a time (default: %(default)s)")
    add_on_error_argument(p, "write null as the reward of a sample that could not be scored, warn and exit 0")
    add_progress_arguments(p)
    add_backend_arguments(p)
    p.set_defaults(func=guarded(run))
    return p


def run(args: argparse.Namespace) -> int:
    backend = selected_backend(args)
    if args.chunk_size < 1:
        raise InputError(f"--chunk-size must be at least 1, got {args.chunk_size}")
    check_input(args.input)
    if args.output != "-" and args.input != "-" and os.path.exists(args.output):
        if os.path.samefile(args.input, args.output):
            raise InputError("the output file is the input file")
    client = make_client(args, backend, on_error=args.on_error)
    out, done = open_output(args.output, resume=args.resume)
    field = args.reward_field
    started = time.monotonic()
    scored = 0
    failed = 0
    failed_lines: List[int] = []  # the first 20
    if done:
        print(f"resuming: {args.output} already holds {done:,} scored lines", file=sys.stderr)
    progress = Progress(count_records(args.input), desc="score", enabled=args.progress, initial=done)
    try:
        for chunk, bad_line in iter_chunks(iter_records(args.input, skip=done), args.chunk_size):
            try:
                rewards = _score(client, chunk)
            except PartialScore as partial:
                _write(out, chunk, partial.rewards, field)
                raise partial.error from None
            _write(out, chunk, rewards, field)
            nan_lines = [r.line for r, x in zip(chunk, rewards) if math.isnan(x)]
            failed += len(nan_lines)
            failed_lines += nan_lines[: max(0, 20 - len(failed_lines))]
            scored += len(chunk)
            progress.update(len(chunk))
            if bad_line is not None:
                raise bad_line
        progress.finish()
    finally:
        progress.close()
        if out is not sys.stdout.buffer:
            out.close()
        client.close()
    took = time.monotonic() - started
    where = "stdout" if args.output == "-" else args.output
    print(f"scored {scored:,} lines in {took:.1f}s -> {where}" + (f" ({done:,} kept from before)" if done else ""),
          file=sys.stderr)
    if failed:
        print(f"warning: {failed} samples could not be scored and have {field}: null "
              f"(lines {', '.join(map(str, failed_lines))}{', ...' if failed > 20 else ''})", file=sys.stderr)
    return EXIT_OK


def _score(client, chunk):
    return score_samples(client, [r.data for r in chunk], lambda i, f: (chunk[i].line, f), hint=HINT)


def _write(out, chunk, rewards, field: str) -> None:
    if not rewards:
        return
    lines = []
    for record, reward in zip(chunk, rewards):
        data = dict(record.data)
        data[field] = json_float(reward)
        lines.append(dumps(data))
    out.write(b"".join(lines))
    out.flush()
