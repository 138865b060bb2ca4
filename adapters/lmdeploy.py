"""lmdeploy: ``POST /pooling`` -> ``{"data": [{"index", "data": <float>}]}`` (raw last-token score)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Dict, List, Optional, Sequence

from .base import Adapter, EncodedInput, Request, VersionRow, batch, get_field, indexed_data


@dataclass(frozen=True)
class LmdeployRow(VersionRow):
    """Behaviour of lmdeploy versions ``[min_version, max_version)``."""

    max_in_flight: Optional[int]
    note: str


#: lmdeploy quirk table (ENGINES.md section 5). ``/pooling`` exists from 0.9.1.
TABLE = (
    LmdeployRow(
        "0.9.1", "0.12", 1,
        "two concurrent /pooling requests can collide (session ids reused per batch "
        "position): one request in flight per server",
    ),
    LmdeployRow("0.12", None, None, "concurrent /pooling requests fixed in 0.12"),
)

#: Unknown version (lmdeploy has no version route): the choice that is safe on every version.
UNKNOWN = LmdeployRow("0.9.1", None, 1, "unknown version: one request in flight, safe on every version")


class LmdeployAdapter(Adapter):
    """lmdeploy ``api_server`` (pytorch backend): ``POST /pooling`` with token ids or text.

    lmdeploy has no version route: pass ``version`` when known, otherwise the safe
    choice (one request in flight) is made and logged.
    """

    engine: ClassVar[str] = "lmdeploy"
    version_path: ClassVar[Optional[str]] = None
    table: ClassVar[Sequence[VersionRow]] = TABLE
    unknown_row: ClassVar[Optional[VersionRow]] = UNKNOWN
    score_path = "/pooling"

    def __init__(self, version: Optional[str] = None, *, model: Optional[str] = None) -> None:
        super().__init__(version, model=model)
        self.max_in_flight = self.row.max_in_flight

    def build_request(self, inputs: Sequence[EncodedInput]) -> Request:
        """``{"model"?, "input": [[ids...]] | [str...]}``; text gets BOS from the server's tokenizer."""
        _, items = batch(inputs)
        body: Dict[str, Any] = {"model": self.model} if self.model else {}
        body["input"] = items
        return Request("POST", self.score_path, body)

    def _values(self, body: Any, n: int, where: str) -> List[Any]:
        items = indexed_data(body, n, where)
        return [get_field(item, "data", where, body, f"data[{i}]") for i, item in enumerate(items)]
