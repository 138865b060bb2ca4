"""What the file subcommands share, under its old name: each part now lives in its own module.

``exits`` (exit codes, ``InputError``/``Failure``, ``guarded``), ``backend`` (``--backend``, the
client), ``reading`` (JSONL input), ``writing`` (JSONL output, ``--resume``), ``progress``,
``scoring`` (a chunk of samples, errors by line and field), ``stream`` (a file through the
model) and ``parsers`` (the help layout). Import from those; this module re-exports them.
"""

from __future__ import annotations

from .backend import (
    BACKENDS, ENGINES, Backend, add_backend_arguments, add_model_arguments, make_client, parse_backend,
    selected_backend,
)
from .exits import (
    EXIT_CODES_HELP, EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, Failure, InputError, Interrupted, guarded,
)
from .parsers import add_subcommand, formatter
from .progress import Progress, add_progress_arguments
from .reading import Record, check_input, count_records, iter_chunks, iter_records, open_input
from .scoring import PartialScore, Where, describe_failures, line_ranges, renamed, score_samples
from .stream import (
    CHUNK_LINES, FieldOf, SamplesOf, Streamed, Write, add_on_error_argument, add_stream_arguments, stream,
)
from .writing import check_output, check_resume, dumps, json_float, open_output, write_lines

__all__ = [
    "BACKENDS", "CHUNK_LINES", "ENGINES", "EXIT_CODES_HELP", "EXIT_FAILURE", "EXIT_INTERRUPTED", "EXIT_OK",
    "EXIT_USAGE", "Backend", "Failure", "FieldOf", "InputError", "Interrupted", "PartialScore", "Progress",
    "Record", "SamplesOf", "Streamed", "Where", "Write", "add_backend_arguments", "add_model_arguments",
    "add_on_error_argument", "add_progress_arguments", "add_stream_arguments", "add_subcommand", "check_input",
    "check_output", "check_resume", "count_records", "describe_failures", "dumps", "formatter", "guarded",
    "iter_chunks", "iter_records", "json_float", "line_ranges", "make_client", "open_input", "open_output",
    "parse_backend", "renamed", "score_samples", "selected_backend", "stream", "write_lines",
]
