"""What every engine adapter is: pure data in, data out, no sockets (the h11 model).

An adapter turns a batch of encoded samples into a :class:`Request` and a response
body into floats. The transport (``rmclient.transport``) does all the I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, List, Optional, Sequence, Union

from rmclient.errors import ResponseError

#: One encoded sample: token ids (exact, preferred) or text (xtuner compatibility).
EncodedInput = Union[str, Sequence[int]]


@dataclass(frozen=True)
class Request:
    """An HTTP request described as data."""

    method: str
    path: str
    json: Optional[dict] = None


class Adapter:
    """Base class of the engine adapters.

    Subclasses override the class attributes and :meth:`build_request` /
    :meth:`parse_response`; the version-dependent behaviour comes from the
    engine module's quirk table, chosen in ``__init__`` from ``version``.
    """

    engine: ClassVar[str] = ""
    health_path: ClassVar[str] = "/health"
    #: Route that reports the engine version, or ``None`` when the engine has none.
    version_path: ClassVar[Optional[str]] = None
    models_path: ClassVar[Optional[str]] = "/v1/models"

    def __init__(self, version: Optional[str] = None, *, model: Optional[str] = None) -> None:
        self.version = version
        self.model = model

    #: Requests one server may have in flight at once (``None``: no limit).
    max_in_flight: Optional[int] = None

    def build_request(self, inputs: Sequence[EncodedInput]) -> Request:
        """The request that scores ``inputs`` (all ids or all text)."""
        raise NotImplementedError

    def parse_response(self, body: Any, n: int, endpoint: str = "") -> List[float]:
        """The ``n`` raw rewards in ``body``, in input order; :class:`ResponseError` otherwise."""
        raise NotImplementedError

    @staticmethod
    def parse_version(body: Any) -> Optional[str]:
        """The engine version in the body of ``version_path``, or ``None``."""
        return None

    @staticmethod
    def parse_models(body: Any) -> "tuple[Optional[str], Optional[int]]":
        """``(served model name, max_model_len)`` from an OpenAI ``/v1/models`` body."""
        try:
            card = body["data"][0]
        except (KeyError, IndexError, TypeError):
            return None, None
        name = card.get("id") if isinstance(card, dict) else None
        max_len = card.get("max_model_len") if isinstance(card, dict) else None
        return name, max_len if isinstance(max_len, int) else None


def check_rewards(values: Sequence[Any], n: int, endpoint: str, body: Any) -> List[float]:
    """Validate ``values`` as ``n`` finite numbers and return them as floats."""
    if len(values) != n:
        raise ResponseError(endpoint, f"expected {n} rewards, got {len(values)}", body)
    out: List[float] = []
    for i, v in enumerate(values):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ResponseError(endpoint, f"reward {i} is not a number: {v!r}", body)
        f = float(v)
        if not math.isfinite(f):
            raise ResponseError(endpoint, f"reward {i} is not finite: {f!r}", body)
        out.append(f)
    return out


def split_inputs(inputs: Sequence[EncodedInput]) -> "tuple[str, list]":
    """``("ids", [[...], ...])`` or ``("text", [str, ...])``; mixing both is an error."""
    items = list(inputs)
    if all(isinstance(x, str) for x in items):
        return "text", items
    if all(not isinstance(x, str) for x in items):
        return "ids", [[int(t) for t in x] for x in items]
    raise TypeError("a batch must be all token ids or all text, not a mix")
