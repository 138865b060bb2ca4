"""What every engine adapter is: pure data in, data out, no sockets (the h11 model).

An adapter turns a batch of encoded samples into a :class:`Request` and a response
body into floats. The transport (``rmclient.transport``) does all the I/O.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, ClassVar, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from rmclient.errors import ConfigurationError, InvalidSampleError, ProtocolError, ResponseError

from .versions import VersionRow, select_row

#: One encoded sample: token ids (exact, preferred) or text (xtuner compatibility).
EncodedInput = Union[str, Sequence[int]]

#: What a request asks the server for, per sample, always raw (no activation):
#: ``"reward"``: one float, the head's value at the last token (a one-label head);
#: ``"vector"``: every label of the head at the last token (a ``num_labels > 1`` head), a list;
#: ``"tokens"``: every label at every token, a list of per-token lists (dense and process rewards).
OUTPUTS = ("reward", "vector", "tokens")


@dataclass(frozen=True)
class Request:
    """An HTTP request described as data."""

    method: str
    path: str
    json: Optional[dict] = None


@dataclass(frozen=True)
class ServerInfo:
    """What a server says about itself at first contact."""

    version: Optional[str] = None
    #: The served model name.
    model: Optional[str] = None
    #: The longest input (in tokens) the server scores; ``None``: it does not say.
    max_input_len: Optional[int] = None
    #: The engine behind a generic protocol (an OpenAI-compatible server's ``owned_by``).
    engine: Optional[str] = None


def model_kind(architecture: Optional[str]) -> str:
    """``"seq_cls"`` (``*ForSequenceClassification``), ``"reward"`` (``*RewardModel``), ``"process"``
    (``*ProcessRewardModel``), ``"causal"`` or ``"unknown"``."""
    if not architecture:
        return "unknown"
    if architecture.endswith("ForSequenceClassification"):
        return "seq_cls"
    if architecture.endswith("ProcessRewardModel"):  # Qwen2ForProcessRewardModel: class logits per token
        return "process"
    if architecture.endswith("RewardModel"):  # InternLM2ForRewardModel, Qwen2ForRewardModel
        return "reward"
    if architecture.endswith("ForCausalLM"):
        return "causal"
    return "unknown"


class Adapter:
    """Base class of the engine adapters.

    Subclasses override the class attributes, :meth:`build_request`, :meth:`_values`
    and :meth:`read_info`; the version-dependent behaviour comes from the engine
    module's table, chosen in ``__init__`` from ``version`` (and ``architecture``,
    the model's ``architectures[0]``, where the engine serves kinds differently).
    """

    engine: ClassVar[str] = ""
    #: The engine's version table and the row used when its version is unknown.
    table: ClassVar[Sequence[VersionRow]] = ()
    unknown_row: ClassVar[Optional[VersionRow]] = None
    health_path: ClassVar[str] = "/health"
    #: GET routes asked at first contact, in groups of alternatives (the first that answers counts).
    info_routes: ClassVar[Tuple[Tuple[str, ...], ...]] = (("/v1/models",),)

    def __init__(
        self, version: Optional[str] = None, *, model: Optional[str] = None, architecture: Optional[str] = None
    ) -> None:
        self.version = version
        self.model = model
        self.architecture = architecture
        #: The table row chosen for ``version``.
        self.row: Any = (
            select_row(self.table, version, self.unknown_row, self.engine, _engine_logger(self))
            if self.unknown_row is not None
            else None
        )

    #: Requests one server may have in flight at once (``None``: no limit).
    max_in_flight: Optional[int] = None
    #: Route of the scoring request.
    score_path: str = ""
    #: What the scoring request carries: ``"ids"`` (token ids), ``"text"`` (text; the server
    #: adds special tokens such as BOS, like the model's tokenizer) or ``"full_text"`` (text with
    #: every special token in it; the server adds none).
    inputs: str = "ids"
    #: The shortest input the server scores.
    min_input_len: ClassVar[int] = 1
    #: The outputs (:data:`OUTPUTS`) this engine returns raw; the others are refused.
    outputs: ClassVar[Tuple[str, ...]] = ("reward",)

    def refuses(self, output: str) -> Optional[str]:
        """Why this server cannot return ``output`` raw, citing the engine (``None``: it can)."""
        if output in self.outputs:
            return None
        return f"{self.engine} returns one value per sample (the head's first label at the last token) only"

    def check_output(self, output: str) -> None:
        """:class:`~rmclient.errors.ConfigurationError` if this server cannot return ``output`` raw."""
        why = self.refuses(output)
        if why:
            raise ConfigurationError(f"cannot score {output!r} outputs: {why}")

    def build_request(self, inputs: Sequence[EncodedInput], output: str = "reward") -> Request:
        """The request that scores ``inputs`` (all ids or all text) for ``output``."""
        raise NotImplementedError

    def parse_response(self, body: Any, n: int, endpoint: str = "", output: str = "reward") -> List[Any]:
        """The ``n`` raw outputs in ``body``, in input order (floats for ``"reward"``, lists of floats
        for ``"vector"``, lists of per-token lists for ``"tokens"``); :class:`ResponseError` otherwise."""
        where = endpoint or f"{self.engine} {self.score_path}"
        values = self._values(body, n, where, output)
        if output == "reward":
            return check_rewards(values, n, where, body)
        return check_outputs(values, n, where, body, output)

    def read(self, body: Any, inputs: Sequence[Any], endpoint: str = "", output: str = "reward") -> List[Any]:
        """The values of ``body`` for the request built from ``inputs`` (:meth:`parse_response`; an
        adapter whose answers need more than their count, the judge's, overrides this)."""
        return self.parse_response(body, len(inputs), endpoint, output)

    def _values(self, body: Any, n: int, where: str, output: str = "reward") -> Sequence[Any]:
        """The raw values in ``body`` in input order (checked by :func:`check_rewards` / :func:`check_outputs`)."""
        raise NotImplementedError

    @classmethod
    def read_info(cls, bodies: Mapping[str, Any]) -> ServerInfo:
        """What the answers of ``info_routes`` (path -> JSON body) say: by default ``/v1/models``'s card."""
        name, max_len = cls._model_card(bodies.get("/v1/models"))
        return ServerInfo(model=name, max_input_len=max_len)

    @staticmethod
    def discovered_options(info: ServerInfo) -> Dict[str, Any]:
        """Constructor options that follow from what the server said (none by default)."""
        return {}

    @staticmethod
    def _version_field(body: Any) -> Optional[str]:
        v = body.get("version") if isinstance(body, dict) else None
        return v if isinstance(v, str) else None

    @staticmethod
    def _model_card(body: Any) -> Tuple[Optional[str], Optional[int]]:
        """``(served model name, max_model_len)`` from an OpenAI ``/v1/models`` body."""
        try:
            card = body["data"][0]
        except (KeyError, IndexError, TypeError):
            return None, None
        if not isinstance(card, dict):
            return None, None
        name, max_len = card.get("id"), card.get("max_model_len")
        ok = isinstance(max_len, int) and not isinstance(max_len, bool) and max_len > 0
        return (name if isinstance(name, str) else None), (max_len if ok else None)


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


def _finite_list(value: Any, endpoint: str, body: Any, what: str) -> List[float]:
    if not isinstance(value, list) or not value:
        raise ResponseError(endpoint, f"{what} is not a non-empty list of numbers: {value!r}", body)
    return check_rewards(value, len(value), endpoint, body)


def check_outputs(values: Sequence[Any], n: int, endpoint: str, body: Any, output: str) -> List[Any]:
    """Validate ``n`` vectors (``output="vector"``) or per-token matrices (``"tokens"``: every row the
    same width) of finite numbers, and return them as float lists."""
    if len(values) != n:
        raise ResponseError(endpoint, f"expected {n} outputs, got {len(values)}", body)
    if output == "vector":
        return [_finite_list(v, endpoint, body, f"output {i}") for i, v in enumerate(values)]
    out = []
    for i, rows in enumerate(values):
        if not isinstance(rows, list) or not rows:
            raise ResponseError(endpoint, f"output {i} is not a list of per-token values: {rows!r}", body)
        matrix = [_finite_list(r, endpoint, body, f"output {i} token {k}") for k, r in enumerate(rows)]
        if len({len(r) for r in matrix}) != 1:
            raise ResponseError(endpoint, f"output {i}: tokens carry different numbers of values", body)
        out.append(matrix)
    return out


def split_inputs(inputs: Sequence[EncodedInput]) -> "tuple[str, list]":
    """``("ids", [[...], ...])`` or ``("text", [str, ...])``; mixing both is an error."""
    items = list(inputs)
    if all(isinstance(x, str) for x in items):
        return "text", items
    if all(not isinstance(x, str) for x in items):
        return "ids", [[int(t) for t in x] for x in items]
    raise TypeError("a batch must be all token ids or all text, not a mix")


def _engine_logger(adapter: Adapter) -> logging.Logger:
    return logging.getLogger(type(adapter).__module__)


def batch(inputs: Sequence[EncodedInput]) -> Tuple[str, List[Any]]:
    """:func:`split_inputs`, refusing an empty batch."""
    kind, items = split_inputs(inputs)
    if not items:
        raise ValueError("cannot score an empty batch")
    return kind, items


def get_field(obj: Any, key: str, where: str, body: Any, what: str = "response") -> Any:
    """``obj[key]``, or :class:`ResponseError` naming ``what`` lacks it."""
    if not isinstance(obj, dict) or key not in obj:
        raise ResponseError(where, f"{what} has no {key!r} field", body)
    return obj[key]


def indexed_data(body: Any, n: int, where: str) -> List[Dict[str, Any]]:
    """The items of an OpenAI-style ``{"data": [{"index": i, ...}]}`` body, sorted by index.

    The indices must be exactly ``0 .. n-1``; anything else is a :class:`ResponseError`.
    """
    data = get_field(body, "data", where, body)
    if not isinstance(data, list):
        raise ResponseError(where, f"'data' is not a list: {type(data).__name__}", body)
    if len(data) != n:
        raise ResponseError(where, f"expected {n} rewards, got {len(data)}", body)
    by_index: Dict[int, Dict[str, Any]] = {}
    for pos, item in enumerate(data):
        idx = get_field(item, "index", where, body, f"data[{pos}]")
        if isinstance(idx, bool) or not isinstance(idx, int) or not 0 <= idx < n:
            raise ResponseError(where, f"data[{pos}] has an invalid index {idx!r}", body)
        if idx in by_index:
            raise ResponseError(where, f"index {idx} appears more than once", body)
        by_index[idx] = item
    return [by_index[i] for i in range(n)]


def single(value: Any, where: str, body: Any, what: str) -> Any:
    """The one element of a one-element list (a one-label head); :class:`ResponseError` otherwise."""
    if not isinstance(value, list) or len(value) != 1:
        raise ResponseError(where, f"{what} is not a one-element list: {value!r}", body)
    return value[0]


# -- what the server halves share ----------------------------------------------------------


def request_object(body: Any) -> Dict[str, Any]:
    """``body`` if it is a JSON object; :class:`~rmclient.errors.ProtocolError` otherwise."""
    if not isinstance(body, dict):
        raise ProtocolError(f"the body must be a JSON object, got {type(body).__name__}")
    return body


def text_list(value: Any, field: str) -> Tuple[List[str], bool]:
    """``(texts, single)`` of a request field that holds a string (one input) or a list of strings.

    Any other shape is a :class:`~rmclient.errors.ProtocolError`; an item that is not a string an
    :class:`~rmclient.errors.InvalidSampleError` naming its index and the field.
    """
    if isinstance(value, str):
        return [value], True
    if not isinstance(value, list):
        raise ProtocolError(f"{field!r} must be a string or a list of strings, got {type(value).__name__}",
                            field=field)
    for i, t in enumerate(value):
        if not isinstance(t, str):
            raise InvalidSampleError(i, field, f"expected a string, got {type(t).__name__}")
    return value, False
