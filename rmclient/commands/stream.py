"""Streaming a JSONL file through the model: read a chunk, score it, write it, in order, resumable."""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from typing import IO, Any, Callable, Dict, List, Optional, Tuple

from .backend import add_backend_arguments, make_client, selected_backend
from .exits import InputError, Interrupted, guarded
from .progress import Progress, add_progress_arguments
from .reading import Record, check_input, count_records, iter_chunks, iter_records
from .scoring import PartialScore, line_ranges, score_samples
from .writing import check_output, check_resume, open_output

__all__ = [
    "CHUNK_LINES", "SamplesOf", "FieldOf", "Write", "Streamed", "stream", "add_on_error_argument",
    "add_stream_arguments",
]

#: Input lines read, scored and written at a time (``--chunk-size``).
CHUNK_LINES = 256

def add_on_error_argument(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--on-error", choices=("raise", "nan"), default="raise",
        help=f"raise (default): stop at the first failed sample, keep what was done and exit 1 naming the lines; "
             f"nan: {what}",
    )



def add_stream_arguments(parser: argparse.ArgumentParser, run: Callable[[argparse.Namespace], int], *,
                         on_error: str, chunk: str = "lines read, scored and written") -> argparse.ArgumentParser:
    """What every :func:`stream` command takes after its own options: --chunk-size, --on-error, the progress
    and backend options; ``run`` becomes the parser's ``func``."""
    parser.add_argument("--chunk-size", type=int, default=CHUNK_LINES, metavar="N",
                        help=f"{chunk} at a time (default: %(default)s)")
    add_on_error_argument(parser, on_error)
    add_progress_arguments(parser)
    add_backend_arguments(parser)
    parser.set_defaults(func=guarded(run))
    return parser


#: The samples of one input line; an :class:`InputError` naming the line and field when it is malformed.
SamplesOf = Callable[[Record], List[Dict[str, Any]]]
#: ``field_of(record, j, field)``: the input field behind ``field`` of the ``j``-th sample of ``record``.
FieldOf = Callable[[Record, int, str], str]
#: ``write(out, records, rewards, scored)``: whole records, in input order, with the rewards of their
#: samples and their :class:`~rmclient.client.Scored` (``out`` is ``None`` when the command writes no file).
Write = Callable[[Optional[IO[bytes]], List[Record], List[float], List[Any]], None]


@dataclass
class Streamed:
    lines: int  # input lines handled by this run
    kept: int  # complete lines the output held from before (--resume)
    seconds: float
    destination: str  # "stdout", the output path, or "" without an output
    cut_lines: List[int] = field(default_factory=list)  # lines with a sample cut to fit (truncated)


def stream(args: argparse.Namespace, *, desc: str, samples_of: SamplesOf, write: Write, nan_effect: str,
           field_of: Optional[FieldOf] = None, unit: str = "lines") -> Streamed:
    """Read ``args.input`` in chunks of ``--chunk-size`` lines, score them and ``write`` each chunk in order.

    Uses ``args.output`` (optional: ``None`` writes nothing), ``--resume`` where the command has it,
    ``--on-error``, ``--progress`` and the backend options. Whatever stops the run (a malformed line or
    field, samples that could not be scored) stops it only after every whole line before it was scored
    and written; then the error is raised (:class:`InputError`: exit 2, :class:`Failure`: exit 1).
    ``nan_effect`` ends the hint printed with failed samples ("pass --on-error nan to ...").
    """
    backend = selected_backend(args)
    if args.chunk_size < 1:
        raise InputError(f"--chunk-size must be at least 1, got {args.chunk_size}")
    check_input(args.input)
    output: Optional[str] = args.output
    resumable = hasattr(args, "resume")
    check_output(output, args.input)  # before the model is loaded
    hint = (f"The lines before them are written: fix the cause and rerun with --resume, or pass --on-error nan "
            f"to {nan_effect}" if resumable and output else f"Pass --on-error nan to {nan_effect}")
    field_of = field_of or (lambda record, j, f: f)
    client = make_client(args, backend, on_error=args.on_error)
    out: Optional[IO[bytes]] = None
    done = 0
    try:
        if output:
            out, done = open_output(output, resume=resumable and args.resume, input_path=args.input)
    except BaseException:
        client.close()
        raise
    if done:
        try:
            check_resume(args.input, output, done)
        except BaseException:
            client.close()
            if out is not None:
                out.close()
            raise
        print(f"resuming: {output} already holds {done:,} scored lines", file=sys.stderr)
    started = time.monotonic()
    lines = 0
    cut_lines: List[int] = []
    progress = Progress(count_records(args.input), desc=desc, unit=unit, enabled=args.progress, initial=done)
    try:
        for chunk, bad_line in iter_chunks(iter_records(args.input, skip=done), args.chunk_size):
            samples: List[Dict[str, Any]] = []
            owner: List[Tuple[int, int]] = []  # sample -> (record in chunk, sample of the record)
            ends: List[int] = []  # record in chunk -> samples up to and including it
            for k, record in enumerate(chunk):
                try:
                    mine = samples_of(record)
                except InputError as exc:  # score and write the lines before it first
                    bad_line, chunk = exc, chunk[:k]
                    break
                samples += mine
                owner += [(k, j) for j in range(len(mine))]
                ends.append(len(samples))

            def where(i: int, f: str) -> Tuple[int, str]:
                k, j = owner[i]
                return chunk[k].line, field_of(chunk[k], j, f)

            base = progress.n

            def per_request(scored: int, total: int, base: int = base, n: int = len(chunk)) -> None:
                progress.set(base + n * scored // max(total, 1))  # lines, as requests finish

            try:
                scored = score_samples(client, samples, where, hint=hint, progress=per_request,
                                       kind=getattr(args, "kind", "reward"), aggregate=getattr(args, "aggregate", "min"))
            except PartialScore as partial:
                complete = sum(1 for end in ends if end <= len(partial.scored))
                if complete:
                    kept = partial.scored[: ends[complete - 1]]
                    write(out, chunk[:complete], [s.reward for s in kept], kept)
                    cut_lines += sorted({chunk[owner[i][0]].line for i, s in enumerate(kept) if s.truncated})
                raise partial.error from None
            if chunk:
                write(out, chunk, [s.reward for s in scored], scored)
                cut_lines += sorted({chunk[owner[i][0]].line for i, s in enumerate(scored) if s.truncated})
            lines += len(chunk)
            progress.set(base + len(chunk))
            if bad_line is not None:
                raise bad_line
        progress.finish()
    except KeyboardInterrupt:
        if output and output != "-" and resumable:
            raise Interrupted(f"{done + lines:,} lines are written to {output}: rerun the same command with "
                              "--resume to continue") from None
        raise
    finally:
        progress.close()
        if out is not None and out is not sys.stdout.buffer:
            out.close()
        client.close()
    if cut_lines:
        shown = line_ranges(cut_lines)
        print(f"warning: {len(cut_lines)} lines had samples cut to fit, by the recipe's rule: "
              f"{client.truncation_limits()}: lines {shown}", file=sys.stderr)
    destination = "" if not output else "stdout" if output == "-" else output
    return Streamed(lines, done, time.monotonic() - started, destination, cut_lines)
