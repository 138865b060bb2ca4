"""JSON parsing for every boundary (engine answers, request bodies, JSONL lines): hostile input is a ``ValueError``.

``json.loads`` of well-formed JSON nested deeper than the interpreter's recursion limit raises
``RecursionError``, which would escape every ``except ValueError`` around it; and a parse that
recurses that far leaves no stack to the finalizers the garbage collector runs meanwhile (they fail
unreported). So nesting is measured before parsing: deeper than :data:`MAX_DEPTH` is refused.
"""

from __future__ import annotations

import json
from itertools import accumulate
from typing import Any, Union

try:  # request bodies of token ids: orjson writes them about 10x faster than json
    import orjson
except ImportError:  # pragma: no cover - orjson is a dependency; a build without wheels falls back
    orjson = None


#: The deepest nesting parsed: far above any answer, request or row, far below the recursion limit.
MAX_DEPTH = 200
_NOT_MARKS = bytes(c for c in range(256) if c not in b'"[]{}')
_STEP = [1 if c in b"[{" else -1 for c in range(256)]


class JSONDepthError(ValueError):
    """The JSON is nested deeper than the parser can follow."""


def too_deep(data: Union[str, bytes, bytearray], limit: int = MAX_DEPTH) -> bool:
    """Whether ``data`` opens more than ``limit`` arrays or objects at once (outside strings)."""
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else bytes(data)
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return False  # fewer brackets than the limit: no deeper nesting either
    if b"\\" in raw:  # escaped backslashes, then escaped quotes, out
        raw = raw.replace(b"\\\\", b"").replace(b'\\"', b"")
    # every quote left opens or closes a string: where each run of quotes is even, no bracket is in
    # a string and the quotes just go; otherwise the brackets outside are the even parts between them
    marks = raw.translate(None, _NOT_MARKS)
    brackets = marks.replace(b'""', b"")
    if b'"' in brackets:
        brackets = b"".join(marks.split(b'"')[::2])
    rest = brackets
    for _ in range(limit // 2):  # each pass takes away the innermost one or two levels
        rest, before = rest.replace(b"[]", b"").replace(b"{}", b""), rest
        if not rest:
            return False
        if len(rest) == len(before):
            break  # unpaired brackets: the exact count decides
    return max(accumulate(map(_STEP.__getitem__, brackets)), default=0) > limit


def loads(data: Union[str, bytes, bytearray], **kwargs: Any) -> Any:
    """``json.loads``; nesting deeper than :data:`MAX_DEPTH` is a :class:`JSONDepthError` (a ``ValueError``)."""
    if too_deep(data):
        raise JSONDepthError("JSON nested too deeply to parse")
    try:
        return json.loads(data, **kwargs)
    except RecursionError:  # a caller already deep in its own stack
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
