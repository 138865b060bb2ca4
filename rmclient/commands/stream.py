"""Streaming a JSONL file through the model: read a chunk, score it, write it, in order, resumable."""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import IO, Any, Callable, Deque, Dict, Iterator, List, Optional, Tuple

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
#: Chunks scored at once: the next ones are read, encoded and sent while the oldest finishes, so that the
#: servers never wait for a chunk's slowest request; each is written, in order, as soon as it is done.
CHUNKS_AHEAD = 3

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
    options = dict(hint=hint, kind=getattr(args, "kind", "reward"), aggregate=getattr(args, "aggregate", "min"))
    ahead = _Ahead(client, progress, options)
    try:
        for job in ahead.run(_jobs(iter_chunks(iter_records(args.input, skip=done), args.chunk_size),
                                   samples_of, field_of)):
            try:
                scored = job.future.result()
            except PartialScore as partial:
                complete = sum(1 for end in job.ends if end <= len(partial.scored))
                if complete:
                    kept = partial.scored[: job.ends[complete - 1]]
                    write(out, job.chunk[:complete], [s.reward for s in kept], kept)
                    cut_lines += job.cut_lines(kept)
                raise partial.error from None
            if job.chunk:
                write(out, job.chunk, [s.reward for s in scored], scored)
                cut_lines += job.cut_lines(scored)
            lines += len(job.chunk)
            progress.update(job.written())
            if job.bad_line is not None:
                raise job.bad_line
        progress.finish()
    except KeyboardInterrupt:
        if output and output != "-" and resumable:
            raise Interrupted(f"{done + lines:,} lines are written to {output}: rerun the same command with "
                              "--resume to continue") from None
        raise
    finally:
        ahead.stop()
        progress.close()
        if out is not None and out is not sys.stdout.buffer:
            out.close()
        client.close()
        ahead.join()
    if cut_lines:
        shown = line_ranges(cut_lines)
        print(f"warning: {len(cut_lines)} lines had samples cut to fit, by the recipe's rule: "
              f"{client.truncation_limits()}: lines {shown}", file=sys.stderr)
    destination = "" if not output else "stdout" if output == "-" else output
    return Streamed(lines, done, time.monotonic() - started, destination, cut_lines)


@dataclass
class _Job:
    """One chunk of whole input lines: its samples, where each came from, and (once submitted) its scoring."""

    chunk: List[Record]
    bad_line: Optional[InputError]  # what ends the input after this chunk
    samples: List[Dict[str, Any]]
    owner: List[Tuple[int, int]]  # sample -> (record in chunk, sample of the record)
    ends: List[int]  # record in chunk -> samples up to and including it
    field_of: FieldOf
    future: "Optional[concurrent.futures.Future[List[Any]]]" = None
    shown: int = 0  # lines the progress bar counts for this chunk

    def where(self, i: int, f: str) -> Tuple[int, str]:
        k, j = self.owner[i]
        return self.chunk[k].line, self.field_of(self.chunk[k], j, f)

    def cut_lines(self, scored: List[Any]) -> List[int]:
        return sorted({self.chunk[self.owner[i][0]].line for i, s in enumerate(scored) if s.truncated})

    def advance(self, scored: int, total: int) -> int:
        """Lines to add to the bar now that ``scored`` of ``total`` samples are settled."""
        lines = len(self.chunk) * scored // max(total, 1)
        step, self.shown = max(0, lines - self.shown), max(self.shown, lines)
        return step

    def written(self) -> int:
        return self.advance(1, 1)


def _jobs(chunks: Iterator[Tuple[List[Record], Optional[InputError]]], samples_of: SamplesOf,
          field_of: FieldOf) -> Iterator[_Job]:
    """The input's chunks as jobs; a malformed line ends its chunk (the lines before it are still scored)."""
    for chunk, bad_line in chunks:
        samples: List[Dict[str, Any]] = []
        owner: List[Tuple[int, int]] = []
        ends: List[int] = []
        for k, record in enumerate(chunk):
            try:
                mine = samples_of(record)
            except InputError as exc:
                bad_line, chunk = exc, chunk[:k]
                break
            samples += mine
            owner += [(k, j) for j in range(len(mine))]
            ends.append(len(samples))
        yield _Job(chunk, bad_line, samples, owner, ends, field_of)
        if bad_line is not None:
            return


class _Ahead:
    """Scores up to :data:`CHUNKS_AHEAD` jobs at once in worker threads (the client's calls from several
    threads share its requests) and hands them back in input order."""

    def __init__(self, client: Any, progress: Progress, options: Dict[str, Any]) -> None:
        self.client, self.progress, self.options = client, progress, options
        self._workers = concurrent.futures.ThreadPoolExecutor(CHUNKS_AHEAD, thread_name_prefix="rmclient-chunk")
        self._stopping = threading.Event()

    def run(self, jobs: Iterator[_Job]) -> Iterator[_Job]:
        """``jobs`` submitted ahead, yielded oldest first: the caller waits for ``job.future`` itself."""
        waiting: Deque[_Job] = collections.deque()
        for job in jobs:
            job.future = self._workers.submit(self._score, job)
            waiting.append(job)
            if len(waiting) >= CHUNKS_AHEAD:
                yield waiting.popleft()
        while waiting:
            yield waiting.popleft()

    def _score(self, job: _Job) -> List[Any]:
        if self._stopping.is_set():  # the run stopped before this chunk's turn
            return []

        def per_request(scored: int, total: int) -> None:
            self.progress.update(job.advance(scored, total))

        return score_samples(self.client, job.samples, job.where, progress=per_request, **self.options)

    def stop(self) -> None:
        """No new chunk starts (call before closing the client, which ends those being scored)."""
        self._stopping.set()
        self._workers.shutdown(wait=False, cancel_futures=True)

    def join(self) -> None:
        self._workers.shutdown(wait=True)
