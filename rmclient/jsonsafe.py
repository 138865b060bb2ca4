"""JSON parsing for every boundary (engine answers, request bodies, JSONL lines): hostile input is a ``ValueError``.

``json.loads`` of well-formed JSON nested deeper than the interpreter's recursion limit raises
``RecursionError``, which would escape every ``except ValueError`` around it.
"""

from __future__ import annotations

import json
from typing import Any, Union

try:  # request bodies of token ids: orjson writes them about 10x faster than json
    import orjson
except ImportError:  # pragma: no cover - orjson is a dependency; a build without wheels falls back
    orjson = None


class JSONDepthError(ValueError):
    """The JSON is nested deeper than the parser can follow."""


def loads(data: Union[str, bytes, bytearray], **kwargs: Any) -> Any:
    """``json.loads``; too deep a nesting is a :class:`JSONDepthError` (a ``ValueError``)."""
    try:
        return json.loads(data, **kwargs)
    except RecursionError:
        raise JSONDepthError("JSON nested too deeply to parse") from None


def dumps(value: Any) -> bytes:
    """Compact JSON as UTF-8 bytes: orjson where it can write ``value``, ``json`` otherwise.

    A non-finite float among a dict's values (a sampling parameter) is a ``ValueError``, as with
    ``json.dumps(allow_nan=False)``: orjson would write it as null, which a server reads as "unset".
    """
    if orjson is not None and not (isinstance(value, dict) and any(_non_finite(v) for v in value.values())):
        try:
            return orjson.dumps(value)
        except TypeError:  # keys that are not strings, integers over 64 bits
            pass
    return json.dumps(value, separators=(",", ":"), allow_nan=False).encode("ascii")


def _non_finite(v: Any) -> bool:
    return isinstance(v, float) and (v != v or v in (float("inf"), float("-inf")))


def shown(value: Any, limit: int = 300) -> str:
    """``repr(value)`` cut to ``limit`` characters, safe on structures too deep to ``repr``."""
    try:
        text = repr(value)
    except RecursionError:
        return f"<{type(value).__name__} nested too deeply to show>"
    return text if len(text) <= limit else text[:limit] + "..."
