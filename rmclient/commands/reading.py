"""Reading JSONL input: checks, line counts, records with their line numbers, chunks."""

from __future__ import annotations

import functools
import math
import os
import sys
from dataclasses import dataclass
from typing import IO, Any, Dict, Iterator, List, Optional, Tuple

from rmclient import jsonsafe

from .exits import InputError

__all__ = ["check_input", "open_input", "count_records", "Record", "iter_records", "iter_chunks", "source_name"]

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
                raise InputError(f"{source_name(path)} line {line_no}: {exc}") from None
            except (UnicodeDecodeError, ValueError) as exc:
                raise InputError(f"{source_name(path)} line {line_no}: not valid JSON: {exc}") from None
            if not isinstance(data, dict):
                raise InputError(f"{source_name(path)} line {line_no}: expected a JSON object, got {type(data).__name__}")
            yield Record(line_no, data)
        if skipped < skip:
            raise InputError(
                f"the output already holds {skip} lines but {source_name(path)} has only {skipped}: "
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


def source_name(path: str) -> str:
    """``path`` as messages name it (``<stdin>`` for ``-``)."""
    return "<stdin>" if path == "-" else path
