"""What every engine adapter is: pure data in, data out, no sockets (the h11 model).

An adapter turns a batch of encoded samples into a :class:`Request` and a response
body into floats. The transport (``rmclient.transport``) does all the I/O.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass
from typing import Any, ClassVar, Dict, List, Optional, Sequence, Tuple, TypeVar, Union

from rmclient.errors import ConfigurationError, ResponseError

#: One encoded sample: token ids (exact, preferred) or text (xtuner compatibility).
EncodedInput = Union[str, Sequence[int]]


@dataclass(frozen=True)
class Request:
    """An HTTP request described as data."""

    method: str
    path: str
    json: Optional[dict] = None


#: A release number: ``"0.10.1.post1"`` -> ``(0, 10, 1)``.
VersionTuple = Tuple[int, ...]


def version_tuple(version: Optional[str]) -> Optional[VersionTuple]:
    """The release part of ``version`` (``"0.32.0+cpu"`` -> ``(0, 32)``), or ``None`` if unparsable.

    Trailing zeros are dropped, so tuples compare as versions. Pre-release,
    post-release, dev and local parts are ignored: a build of a release behaves
    like that release.
    """
    if not isinstance(version, str):
        return None
    release: Optional[Tuple[int, ...]] = None
    try:
        from packaging.version import InvalidVersion, Version

        try:
            release = Version(version).release
        except InvalidVersion:
            release = None
    except ImportError:  # packaging is not a dependency: fall back to the leading numbers
        pass
    if release is None:
        m = re.match(r"\s*v?(\d+(?:\.\d+)*)", version)
        if not m:
            return None
        release = tuple(int(x) for x in m.group(1).split("."))
    return _trim(release)


def _trim(release: Sequence[int]) -> VersionTuple:
    out = [int(x) for x in release]
    while len(out) > 1 and out[-1] == 0:
        out.pop()
    return tuple(out)


def parse_version(text: str, width: int = 3) -> VersionTuple:
    """``version_tuple`` padded with zeros (or cut) to ``width`` numbers: ``"0.11.0rc2"`` -> ``(0, 11, 0)``.

    An unreadable version is a :class:`ConfigurationError`.
    """
    release = version_tuple(text)
    if release is None:
        raise ConfigurationError(f"cannot read an engine version from {text!r}")
    return (release + (0,) * width)[:width]


def format_version(version: Sequence[int]) -> str:
    """``(0, 10, 1)`` -> ``"0.10.1"``."""
    return ".".join(str(x) for x in version)


@dataclass(frozen=True)
class VersionRow:
    """One row of a version table: the behaviour of ``min_version <= v < max_version``.

    ``max_version`` ``None`` means "and every later version". Engine modules subclass
    this with their behaviour fields and a ``note`` that cites the range.
    """

    min_version: str
    max_version: Optional[str]

    @property
    def since(self) -> VersionTuple:
        """``min_version`` parsed."""
        return version_tuple(self.min_version) or ()

    @property
    def until(self) -> Optional[VersionTuple]:
        """``max_version`` parsed (``None``: open)."""
        return None if self.max_version is None else version_tuple(self.max_version)

    def covers(self, version: Sequence[int]) -> bool:
        """Whether ``version`` (a release tuple) falls in this row's range."""
        v, until = _trim(version), self.until
        return bool(self.since) and self.since <= v and (until is None or v < until)

    @property
    def label(self) -> str:
        hi = "and later" if self.max_version is None else f"< {self.max_version}"
        return f"{self.min_version} {hi}"


R = TypeVar("R", bound=VersionRow)


def select_row(
    table: Sequence[R],
    version: Union[str, Sequence[int], None],
    unknown: Optional[R],
    engine: str,
    log: logging.Logger,
    *,
    newer_uses_last: bool = False,
) -> R:
    """The row of ``table`` covering ``version`` (a version string or a release tuple).

    An unknown or unparsable version gives ``unknown`` (logged), or a
    :class:`ConfigurationError` when ``unknown`` is ``None``. A version older than
    the first row is a :class:`ConfigurationError`; one newer than the last row
    (which must then be closed) is too, unless ``newer_uses_last``: then the last
    row, with a warning.
    """
    if version is None or isinstance(version, str):
        parsed = version_tuple(version)
        shown = str(version)
    else:
        parsed, shown = _trim(version), format_version(version)
    if parsed is None:
        if unknown is None:
            raise ConfigurationError(f"cannot read an engine version from {version!r}")
        log.info(
            "%s version %s; assuming: %s",
            engine,
            "unknown" if version is None else f"{version!r} unparsable",
            getattr(unknown, "note", unknown),
        )
        return unknown
    for row in table:
        if row.covers(parsed):
            return row
    last = table[-1]
    if newer_uses_last and parsed >= last.since:
        log.warning(
            "%s %s is newer than any version rmclient knows; using the row for %s", engine, shown, last.label
        )
        return last
    raise ConfigurationError(
        f"{engine} {shown} is not supported: the oldest supported version is {table[0].min_version}"
    )


class Adapter:
    """Base class of the engine adapters.

    Subclasses override the class attributes and :meth:`build_request` /
    :meth:`parse_response`; the version-dependent behaviour comes from the
    engine module's quirk table, chosen in ``__init__`` from ``version``.
    """

    engine: ClassVar[str] = ""
    #: The engine's quirk table and the row used when its version is unknown.
    table: ClassVar[Sequence[VersionRow]] = ()
    unknown_row: ClassVar[Optional[VersionRow]] = None
    health_path: ClassVar[str] = "/health"
    #: Route that reports the engine version, or ``None`` when the engine has none.
    version_path: ClassVar[Optional[str]] = None
    models_path: ClassVar[Optional[str]] = "/v1/models"
    #: Whether the engine takes token ids (else the client sends each sample's full text).
    accepts_ids: ClassVar[bool] = True

    def __init__(self, version: Optional[str] = None, *, model: Optional[str] = None) -> None:
        self.version = version
        self.model = model
        #: The quirk-table row chosen for ``version``.
        self.row: Any = (
            select_row(self.table, version, self.unknown_row, self.engine, _engine_logger(self))
            if self.unknown_row is not None
            else None
        )

    #: Requests one server may have in flight at once (``None``: no limit).
    max_in_flight: Optional[int] = None
    #: Route of the scoring request.
    score_path: str = ""

    def build_request(self, inputs: Sequence[EncodedInput]) -> Request:
        """The request that scores ``inputs`` (all ids or all text)."""
        raise NotImplementedError

    def parse_response(self, body: Any, n: int, endpoint: str = "") -> List[float]:
        """The ``n`` raw rewards in ``body``, in input order; :class:`ResponseError` otherwise."""
        where = endpoint or f"{self.engine} {self.score_path}"
        return check_rewards(self._values(body, n, where), n, where, body)

    def _values(self, body: Any, n: int, where: str) -> Sequence[Any]:
        """The raw values in ``body`` in input order (checked by :func:`check_rewards`)."""
        raise NotImplementedError

    @staticmethod
    def parse_version(body: Any) -> Optional[str]:
        """The engine version in the body of ``version_path`` (its ``"version"``), or ``None``."""
        v = body.get("version") if isinstance(body, dict) else None
        return v if isinstance(v, str) else None

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
