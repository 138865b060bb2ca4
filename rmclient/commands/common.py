"""What the file subcommands share: exit codes, backend options, JSONL streaming, progress, scoring in chunks."""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import IO, Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

from rmclient import jsonsafe
from rmclient.client import SERVER_TYPES
from rmclient.errors import ConfigurationError, InvalidSampleError, RMClientError, ScoringError

#: Exit codes, the same for every subcommand.
EXIT_OK = 0
EXIT_FAILURE = 1  # runtime failure: a server unreachable, samples that failed, parity over tolerance
EXIT_USAGE = 2  # usage error or bad input: wrong options, a missing file, a malformed line or field
EXIT_INTERRUPTED = 130

EXIT_CODES_HELP = """\
exit codes:
  0    success
  1    runtime failure: a server unreachable or erroring, samples that failed
       (their line numbers are printed), a check that did not pass
  2    usage error or bad input: wrong options, a missing file or model,
       a line that is not a JSON object, a missing or malformed field
       (the line number and field are printed)
  130  interrupted (Ctrl-C)"""

BACKENDS: Tuple[str, ...] = tuple(SERVER_TYPES)  # transformers, sglang, vllm, lmdeploy, ...
ENGINES = tuple(b for b in BACKENDS if b != "transformers")
CHUNK_LINES = 256


class InputError(Exception):
    """Bad input or usage: exit code 2."""


class Failure(Exception):
    """A runtime failure: exit code 1."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a resumable run: the message says how to continue (exit code 130)."""


# -- backend selection ---------------------------------------------------------------


@dataclass(frozen=True)
class Backend:
    """``transformers`` (in-process) or an engine with its server addresses."""

    engine: str
    addresses: Tuple[str, ...] = ()

    def __str__(self) -> str:
        return self.engine if not self.addresses else f"{self.engine}@{','.join(self.addresses)}"


def parse_backend(text: str) -> Backend:
    """``transformers``, ``ENGINE`` or ``ENGINE@ADDRESS[,ADDRESS...]`` (an argparse ``type``)."""
    engine, at, rest = text.strip().partition("@")
    engine = engine.strip().lower()
    if engine not in BACKENDS:
        raise argparse.ArgumentTypeError(
            f"unknown backend {engine!r} in {text!r}: use transformers, or ENGINE@ADDRESS with ENGINE one of "
            f"{', '.join(ENGINES)} (e.g. vllm@127.0.0.1:8000)"
        )
    addresses = tuple(a.strip() for a in rest.split(",") if a.strip())
    if engine == "transformers" and at:
        raise argparse.ArgumentTypeError(f"{text!r}: the transformers backend runs in-process and takes no address")
    if at and not addresses:
        raise argparse.ArgumentTypeError(f"{text!r}: no address after '@'")
    return Backend(engine, addresses)


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """``--model`` and the recipe options (how samples are encoded), plus in-process and retry settings."""
    g = parser.add_argument_group("model and recipe")
    g.add_argument("--model", required=True, metavar="PATH",
                   help="model folder or hub id: the tokenizer, config and recipe come from it "
                        "(with a server backend only its tokenizer and config are read)")
    g.add_argument("--recipe", choices=("polar", "chat_template"), default=None,
                   help="how samples are encoded (default: chosen from the model and the data)")
    g.add_argument("--max-length", type=int, default=None, metavar="N",
                   help="most token ids per encoded sample (default 16384, lowered to the server's max_model_len)")
    g.add_argument("--max-response-length", type=int, default=None, metavar="N",
                   help="POLAR's token budget for the reference and the output (default 4096)")
    g.add_argument("--system-prompt", default=None, metavar="TEXT",
                   help="a system turn for chat-template models (e.g. Qwen2.5-Math-RM)")
    g.add_argument("--trust-remote-code", action="store_true", help="allow the checkpoint's own code")
    g.add_argument("--batch-size", type=int, default=None, metavar="N",
                   help="samples per forward pass (transformers, default 32) or the most per request "
                        "(servers, default 256; fewer when that keeps every server slot busy)")
    g.add_argument("--device", default=None, help="transformers only: cuda, cpu, ... (default: CUDA if present)")
    g.add_argument("--dtype", default=None, help="transformers only: bfloat16, float32, ...")
    g.add_argument("--api-key", default=os.environ.get("RMCLIENT_API_KEY"), metavar="KEY",
                   help="bearer token for the servers (default: $RMCLIENT_API_KEY)")
    g.add_argument("--max-attempts", type=int, default=None, metavar="N",
                   help="attempts per request before a sample is reported as failed (default 5)")
    g.add_argument("--deadline", type=float, default=None, metavar="SECONDS",
                   help="seconds for one chunk of samples, retries included (default 600)")


def add_backend_arguments(parser: argparse.ArgumentParser) -> None:
    """``--backend`` / ``--server-address`` and the model options."""
    g = parser.add_argument_group("backend")
    g.add_argument("--backend", type=parse_backend, default=Backend("transformers"), metavar="BACKEND",
                   help=f"transformers (in-process, the default) or a server: {', '.join(ENGINES)}; "
                        "ENGINE@ADDRESS[,ADDRESS] gives the addresses too (e.g. vllm@127.0.0.1:8000)")
    g.add_argument("--server-address", action="append", default=None, metavar="ADDRESS",
                   help="host:port or URL of a server; repeat it or separate by commas for several")
    add_model_arguments(parser)


def selected_backend(args: argparse.Namespace) -> Backend:
    """The backend of ``--backend`` and ``--server-address``, checked."""
    backend: Backend = args.backend
    extra: List[str] = []
    for item in args.server_address or []:
        extra += [a.strip() for a in item.split(",") if a.strip()]
    if backend.engine == "transformers":
        if extra:
            raise InputError(f"--server-address needs a server --backend ({', '.join(ENGINES)})")
        return backend
    backend = Backend(backend.engine, backend.addresses + tuple(extra))
    if not backend.addresses:
        raise InputError(f"--backend {backend.engine} needs --server-address (or --backend {backend.engine}@HOST:PORT)")
    return backend


def make_client(args: argparse.Namespace, backend: Backend, *, on_error: str = "raise") -> Any:
    """A :class:`RewardModelClient` for ``backend`` with the model options of ``args``."""
    from rmclient.client import RewardModelClient

    options: Dict[str, Any] = {}
    for name in ("max_length", "max_response_length", "recipe", "system_prompt", "batch_size",
                 "device", "dtype", "api_key", "max_attempts", "deadline"):
        value = getattr(args, name, None)
        if value is not None:
            options[name] = value
    for name in ("max_length", "max_response_length", "batch_size", "max_attempts"):
        if name in options and options[name] < 1:
            raise InputError(f"--{name.replace('_', '-')} must be at least 1, got {options[name]}")
    try:
        return RewardModelClient(
            args.model,
            server_type=backend.engine,
            server_address=list(backend.addresses) or None,
            trust_remote_code=args.trust_remote_code,
            on_error=on_error,
            # in-process on CPU, one sample per forward pass: a reward never depends on the other lines of
            # its chunk, so --chunk-size and --resume give byte-identical output
            batch_invariant=None,
            **options,
        )
    except ConfigurationError as exc:
        raise InputError(str(exc)) from exc
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot load the tokenizer and config of --model {args.model}: {exc}") from exc


# -- running a subcommand ---------------------------------------------------------------


def guarded(func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Run a subcommand, turning the errors a user can meet into a message on stderr and an exit code."""

    @functools.wraps(func)
    def run(args: argparse.Namespace) -> int:
        prog = f"rmclient {args.command}"
        try:
            return func(args)
        except InputError as exc:
            print(f"{prog}: error: {exc}", file=sys.stderr)
            return EXIT_USAGE
        except ConfigurationError as exc:
            print(f"{prog}: error: {exc}", file=sys.stderr)
            return EXIT_USAGE
        except Failure as exc:
            print(f"{prog}: failed: {exc}", file=sys.stderr)
            return EXIT_FAILURE
        except RMClientError as exc:  # servers unreachable or erroring, bad responses
            print(f"{prog}: failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            return EXIT_FAILURE
        except KeyboardInterrupt as exc:
            print(f"{prog}: interrupted" + (f": {exc}" if str(exc) else ""), file=sys.stderr)
            return EXIT_INTERRUPTED
        except BrokenPipeError:  # `rmclient score ... -o - | head`
            try:
                sys.stdout = open(os.devnull, "w")
            except OSError:  # pragma: no cover
                pass
            return EXIT_FAILURE
        except OSError as exc:  # writing the output failed (disk full, permissions, ...)
            print(f"{prog}: failed: {exc}", file=sys.stderr)
            return EXIT_FAILURE

    return run


def formatter(prog: str) -> argparse.HelpFormatter:
    return argparse.RawDescriptionHelpFormatter(prog, max_help_position=32, width=min(100, _columns()))


def _columns() -> int:
    try:
        return max(60, os.get_terminal_size(sys.stderr.fileno()).columns - 2)
    except (OSError, ValueError, AttributeError):
        return 100


# -- JSONL input ---------------------------------------------------------------------------


def check_input(path: str) -> None:
    """An :class:`InputError` unless ``path`` is ``-`` (stdin) or a readable file."""
    if path == "-":
        return
    if not os.path.exists(path):
        raise InputError(f"{path}: no such file")
    if os.path.isdir(path):
        raise InputError(f"{path}: is a directory, expected a JSONL file")
    if not os.access(path, os.R_OK):
        raise InputError(f"{path}: not readable")


def open_input(path: str) -> IO[bytes]:
    check_input(path)
    if path == "-":
        return sys.stdin.buffer
    try:
        return open(path, "rb")
    except OSError as exc:
        raise InputError(f"{path}: {exc.strerror or exc}") from exc


def count_records(path: str) -> Optional[int]:
    """A fast count of the lines of ``path`` (for the ETA); ``None`` for stdin or an unreadable file."""
    if path == "-" or not os.path.isfile(path):
        return None
    n, last = 0, b"\n"
    try:
        with open(path, "rb") as f:
            for block in iter(functools.partial(f.read, 1 << 20), b""):
                n += block.count(b"\n")
                last = block[-1:]
    except OSError:
        return None
    return n + (last != b"\n")


@dataclass
class Record:
    """One JSONL line: its 1-based line number and the parsed object."""

    line: int
    data: Dict[str, Any]


def iter_records(path: str, *, skip: int = 0) -> Iterator[Record]:
    """The JSON objects of ``path``, one per non-blank line; the first ``skip`` are passed over unparsed.

    Raises :class:`InputError` naming the line when a line is not a JSON object.
    """
    f = open_input(path)
    try:
        skipped = 0
        for line_no, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            if skipped < skip:
                skipped += 1
                continue
            try:
                data = jsonsafe.loads(raw, parse_constant=_reject_constant, parse_float=_finite_float)
            except _NonFinite as exc:
                raise InputError(f"{_name(path)} line {line_no}: {exc}") from None
            except (UnicodeDecodeError, ValueError) as exc:
                raise InputError(f"{_name(path)} line {line_no}: not valid JSON: {exc}") from None
            if not isinstance(data, dict):
                raise InputError(f"{_name(path)} line {line_no}: expected a JSON object, got {type(data).__name__}")
            yield Record(line_no, data)
        if skipped < skip:
            raise InputError(
                f"the output already holds {skip} lines but {_name(path)} has only {skipped}: "
                "is it the output of another input?"
            )
    finally:
        if f is not sys.stdin.buffer:
            f.close()


class _NonFinite(Exception):
    """NaN, Infinity or a number too large for a float: Python's json reads them, but they are not JSON."""


def _reject_constant(name: str) -> float:
    raise _NonFinite(f"{name} is not valid JSON (NaN/Infinity are not JSON numbers)")


def _finite_float(text: str) -> float:
    x = float(text)
    if math.isinf(x):
        raise _NonFinite(f"the number {text[:40]} is out of range (it would be Infinity, which is not valid JSON)")
    return x


def iter_chunks(records: Iterator[Record], size: int) -> Iterator[Tuple[List[Record], Optional[InputError]]]:
    """``records`` in lists of ``size``; a bad line ends the stream with the records before it and the error."""
    chunk: List[Record] = []
    while True:
        try:
            record = next(records)
        except StopIteration:
            break
        except InputError as exc:
            yield chunk, exc
            return
        chunk.append(record)
        if len(chunk) >= size:
            yield chunk, None
            chunk = []
    if chunk:
        yield chunk, None


def _name(path: str) -> str:
    return "<stdin>" if path == "-" else path


# -- JSONL output ----------------------------------------------------------------------------


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


# -- progress --------------------------------------------------------------------------------


def add_progress_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_mutually_exclusive_group()
    g.add_argument("--progress", dest="progress", action="store_const", const=True, default=None,
                   help="show the progress bar on stderr even when it is not a terminal")
    g.add_argument("--no-progress", dest="progress", action="store_const", const=False,
                   help="no progress bar (default: shown when stderr is a terminal)")


class Progress:
    """A progress bar on stderr (tqdm): count, percentage, rate and ETA.

    Shown when stderr is a terminal, redrawn in place at most 10 times a second; forced
    elsewhere with ``--progress`` (then redrawn every 5 s). Thread-safe: the client's
    per-request callback moves it from its own thread.
    """

    def __init__(self, total: Optional[int], *, desc: str, unit: str = "lines", enabled: Optional[bool] = None,
                 initial: int = 0, stream: Optional[IO[str]] = None) -> None:
        from tqdm import tqdm

        self.stream = stream or sys.stderr
        tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.enabled = tty if enabled is None else enabled
        counted = "{n_fmt}/{total_fmt} " + unit if total else "{n_fmt} " + unit
        head = "{desc}: {percentage:3.0f}% [{bar:24}] " if total else "{desc}: "
        self._bar = tqdm(
            total=total or None, initial=initial, desc=desc, unit=f" {unit}", file=self.stream,
            disable=not self.enabled, ascii=" #", mininterval=0.1 if tty else 5.0, dynamic_ncols=tty,
            bar_format=head + counted + "  {rate_fmt}  elapsed {elapsed}" + ("  ETA {remaining}" if total else ""),
        )
        self.n = initial
        self._lock = threading.Lock()

    def update(self, k: int) -> None:
        with self._lock:
            self._set(self.n + k)

    def set(self, n: int) -> None:
        """Move the count to ``n`` (never back)."""
        with self._lock:
            self._set(n)

    def _set(self, n: int) -> None:
        if n > self.n and not self._bar.disable:
            self._bar.update(n - self.n)
        self.n = max(self.n, n)

    def finish(self) -> None:
        """The input is exhausted: the count is the total (the pre-count also counted blank lines)."""
        with self._lock:
            self._bar.total = self.n
            self._bar.refresh()

    def close(self) -> None:
        with self._lock:
            self._bar.close()


# -- scoring in chunks -------------------------------------------------------------------------


class PartialScore(Exception):
    """Scoring stopped: the first ``len(scored)`` samples were scored, then ``error`` (InputError or Failure)."""

    def __init__(self, scored: List[Any], error: Exception) -> None:
        super().__init__(str(error))
        self.scored = scored
        self.error = error


#: ``where(sample index, field) -> (line number, field name in the input)``.
Where = Callable[[int, str], Tuple[int, str]]


def score_samples(
    client: Any, samples: Sequence[Dict[str, Any]], where: Where, *, hint: str = "", progress: Any = None
) -> List[Any]:
    """Each sample's :class:`~rmclient.client.Scored` (reward, tokens, cut) in order, or :class:`PartialScore`
    with those of the samples before the fault. ``progress(scored, total)``: as requests finish.

    A malformed sample becomes an :class:`InputError` naming its line and field;
    samples that could not be scored become a :class:`Failure` listing their
    lines and reasons (then ``hint``).
    """
    from rmclient.client import Scored

    if not samples:
        return []
    try:
        return client.score_details(list(samples), progress=progress)
    except InvalidSampleError as exc:
        line, field = where(exc.index, exc.field)
        error = InputError(f"line {line}, field {field!r}: {exc.reason}")
        prefix = score_samples(client, samples[: exc.index], where, hint=hint) if exc.index > 0 else []
        raise PartialScore(prefix, error) from None
    except ScoringError as exc:
        first = min(exc.failures)
        message = describe_failures(exc.failures, where) + (f". {hint}" if hint else "")
        encoded = client.encode_samples(list(samples[:first])) if first else []
        prefix = [Scored(float(r), len(e.ids), e.truncated) for r, e in zip(exc.rewards[:first], encoded)]
        raise PartialScore(prefix, Failure(message)) from None


def describe_failures(failures: Dict[int, str], where: Where) -> str:
    """``"3 samples could not be scored (input lines 4-6): REASON (lines 4-6)"``, grouped by reason."""
    by_reason: Dict[str, List[int]] = {}
    all_lines: List[int] = []
    for index, why in sorted(failures.items()):
        line = where(index, "")[0]
        if not all_lines or all_lines[-1] != line:
            all_lines.append(line)
        lines = by_reason.setdefault(why, [])
        if not lines or lines[-1] != line:
            lines.append(line)
    reasons = list(by_reason.items())
    shown = "; ".join(
        f"{why} ({'all' if len(reasons) == 1 else 'lines ' + line_ranges(lines)})" for why, lines in reasons[:3]
    )
    more = f"; and {len(reasons) - 3} other reasons" if len(reasons) > 3 else ""
    n = len(failures)
    return f"{n} sample{'s' if n != 1 else ''} could not be scored (input lines {line_ranges(all_lines)}): {shown}{more}"


def line_ranges(values: List[int]) -> str:
    """``[1, 2, 3, 7]`` -> ``"1-3, 7"`` (at most 20 ranges shown)."""
    out: List[str] = []
    i = 0
    while i < len(values):
        j = i
        while j + 1 < len(values) and values[j + 1] == values[j] + 1:
            j += 1
        out.append(str(values[i]) if i == j else f"{values[i]}-{values[j]}")
        i = j + 1
    return ", ".join(out[:20]) + (", ..." if len(out) > 20 else "")


def add_on_error_argument(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--on-error", choices=("raise", "nan"), default="raise",
        help=f"raise (default): stop at the first failed sample, keep what was done and exit 1 naming the lines; "
             f"nan: {what}",
    )



def add_subcommand(sub: "argparse._SubParsersAction", name: str, *, summary: str, description: str,
                   epilog: str) -> argparse.ArgumentParser:
    """A subcommand's parser with the layout every file subcommand uses."""
    return sub.add_parser(name, help=summary, description=description, epilog=epilog, formatter_class=formatter)


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


def renamed(field_name: str, new: str, prefixes: Sequence[str] = ("output",)) -> str:
    """``field_name`` with a leading ``prefix`` (``output``, ``output[1].content``, ...) replaced by ``new``."""
    for prefix in prefixes:
        if field_name == prefix or field_name.startswith(prefix + "[") or field_name.startswith(prefix + "."):
            return new + field_name[len(prefix):]
    return field_name


# -- streaming a file through the model ----------------------------------------------------------

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
                scored = score_samples(client, samples, where, hint=hint, progress=per_request)
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
                    f"--resume: {_name(input_path)} line {record.line} is not the sample kept as line {k} of "
                    f"{output_path}: the input changed since that run. Rerun without --resume to score it again"
                )


def write_lines(out: Optional[IO[bytes]], rows: Sequence[Dict[str, Any]]) -> None:
    """``rows`` as JSONL lines on ``out`` (nothing when ``out`` is ``None``), flushed."""
    if out is not None and rows:
        out.write(b"".join(dumps(row) for row in rows))
        out.flush()
