"""``rmclient score IN.jsonl -o OUT.jsonl``: add a reward to every line of a JSONL file, streaming."""

from __future__ import annotations

import argparse
import math
import sys
from typing import Any, Dict, List

from rmclient.adapters.rmclient import KINDS
from rmclient.steps import AGGREGATES

from .exits import EXIT_CODES_HELP, EXIT_OK
from .parsers import add_subcommand
from .reading import Record
from .stream import add_stream_arguments, stream
from .writing import json_float, write_lines

DESCRIPTION = """\
Score every line of a JSONL file and write it out with all its fields plus the reward.

Each line is one sample, POLAR style {"prompt", "reference", "output"} or
outcome-RM style {"prompt", "output"} or {"messages": [...]}; prompt, reference
and output are strings or lists of {"role", "content"} messages. Other fields
are copied unchanged. The file is read and scored in chunks of --chunk-size
lines, three chunks at a time (the next ones are sent while the oldest
finishes), and each chunk is written, in input order, as soon as it is done:
memory stays bounded whatever the size of the file, and an interrupted run
continues with --resume, without rescoring what OUT already holds.

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


def register(sub: "argparse._SubParsersAction") -> argparse.ArgumentParser:
    p = add_subcommand(sub, "score", summary="add a reward to every line of a JSONL file (streaming, resumable)",
                       description=DESCRIPTION, epilog=EPILOG)
    p.add_argument("input", metavar="IN.jsonl", help="samples, one JSON object per line ('-' for stdin)")
    p.add_argument("-o", "--output", required=True, metavar="OUT.jsonl",
                   help="where the scored lines go ('-' for stdout); replaced unless --resume")
    p.add_argument("--resume", action="store_true",
                   help="keep the complete lines OUT already holds (a cut-off last line is dropped) "
                        "and score only the lines after them")
    p.add_argument("--reward-field", default="reward", metavar="NAME",
                   help="name of the field added to each line (default: %(default)s)")
    p.add_argument("--kind", choices=KINDS, default="reward",
                   help="what to write: one reward (default); 'steps' for a process reward model ({prompt, steps: "
                        "[...]} or {prompt, output, step_separator} lines): the aggregate as the reward plus "
                        "step_rewards (null for steps cut by the length limit), step_spans and cut_steps; 'tokens': "
                        "the head's value at every output token, with token_spans; 'vector': {label: value} of a "
                        "multi-objective head")
    p.add_argument("--aggregate", choices=sorted(AGGREGATES), default="min",
                   help="--kind steps: how the steps' rewards make the reward field (default: %(default)s)")
    p.add_argument("--ray", default=None, metavar="ADDRESS",
                   help="run as a Ray Data job: 'auto' (the running cluster), ray://HOST:PORT, or 'local' (a cluster "
                        "of this machine); IN is JSONL or Parquet, OUT a folder of JSONL (or Parquet: *.parquet) files")
    p.add_argument("--ray-actors", type=int, default=1, metavar="N",
                   help="--ray: scoring actors, one client and one CPU each; the reading takes a CPU too "
                        "(default: %(default)s)")
    p.add_argument("--with-tokens", action="store_true",
                   help="also add num_tokens (the token ids scored) and truncated (whether the sample was cut "
                        "to fit) to each line")
    return add_stream_arguments(
        p, run, on_error="write null as the reward of a sample that could not be scored, warn and exit 0")


def run(args: argparse.Namespace) -> int:
    if args.ray:
        from .ray_score import run_on_ray

        return run_on_ray(args)
    field = args.reward_field
    failed = 0  # samples that could not be scored (--on-error nan)
    failed_lines: List[int] = []  # the first 20

    def write(out: Any, records: List[Record], rewards: List[float], scored: List[Any]) -> None:
        nonlocal failed
        nan_lines = [r.line for r, x in zip(records, rewards) if isinstance(x, float) and math.isnan(x)]
        failed += len(nan_lines)
        failed_lines.extend(nan_lines[: max(0, 20 - len(failed_lines))])
        rows = [{**r.data, field: json_float(x) if isinstance(x, float) else x} for r, x in zip(records, rewards)]
        for row, s in zip(rows, scored):
            row.update(getattr(s, "extra", {}))
        if args.with_tokens:
            for row, s in zip(rows, scored):
                row.update(num_tokens=s.num_tokens, truncated=s.truncated)
        write_lines(out, rows)

    done = stream(args, desc="score", samples_of=_samples, write=write, nan_effect="write null for them")
    print(f"scored {done.lines:,} lines in {done.seconds:.1f}s -> {done.destination}"
          + (f" ({done.kept:,} kept from before)" if done.kept else ""), file=sys.stderr)
    if failed:
        print(f"warning: {failed} samples could not be scored and have {field}: null "
              f"(lines {', '.join(map(str, failed_lines))}{', ...' if failed > 20 else ''})", file=sys.stderr)
    return EXIT_OK


def _samples(record: Record) -> List[Dict[str, Any]]:
    return [record.data]
