"""JSON parsing for every boundary (engine answers, request bodies, JSONL lines): hostile input is a ``ValueError``.

``json.loads`` of well-formed JSON nested deeper than the interpreter's recursion limit raises
``RecursionError``, which would escape every ``except ValueError`` around it.
"""

from __future__ import annotations

import json
from typing import Any, Union


class JSONDepthError(ValueError):
    """The JSON is nested deeper than the parser can follow."""


def loads(data: Union[str, bytes, bytearray], **kwargs: Any) -> Any:
    """``json.loads``; too deep a nesting is a :class:`JSONDepthError` (a ``ValueError``)."""
    try:
        return json.loads(data, **kwargs)
    except RecursionError:
        raise JSONDepthError("JSON nested too deeply to parse") from None


def shown(value: Any, limit: int = 300) -> str:
    """``repr(value)`` cut to ``limit`` characters, safe on structures too deep to ``repr``."""
    try:
        text = repr(value)
    except RecursionError:
        return f"<{type(value).__name__} nested too deeply to show>"
    return text if len(text) <= limit else text[:limit] + "..."
