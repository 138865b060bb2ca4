"""sglang: native ``POST /classify`` (raw score), never ``/v1/classify`` (softmax)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, List, Optional, Sequence

from rmclient.errors import ResponseError

from .base import Adapter, EncodedInput, Request, VersionRow, batch, get_field, single


@dataclass(frozen=True)
class SglangRow(VersionRow):
    """Behaviour of sglang versions ``[min_version, max_version)``."""

    note: str


#: sglang quirk table (ENGINES.md section 3). The scoring request is the same in every row.
TABLE = (
    SglangRow(
        "0.4.3", "0.5.4",
        "native /classify takes {'text': [...]} or {'input_ids': [[...]]}, returns raw "
        "[{'embedding': [score], 'meta_info'}]; Qwen2ForRewardModel from 0.4.4",
    ),
    SglangRow(
        "0.5.4", None,
        "as before (seen to 0.5.23); /v1/classify exists but applies softmax (1.0 for a "
        "one-label head): never used",
    ),
)

#: Unknown version: the request is the same on every supported version.
UNKNOWN = SglangRow("0.4.3", None, "unknown version: native /classify, the same request on every version")


class SglangAdapter(Adapter):
    """sglang ``--is-embedding`` server: ``POST /classify`` with token ids or text."""

    engine: ClassVar[str] = "sglang"
    version_path: ClassVar[Optional[str]] = "/get_server_info"
    table: ClassVar[Sequence[VersionRow]] = TABLE
    unknown_row: ClassVar[Optional[VersionRow]] = UNKNOWN
    score_path = "/classify"

    @staticmethod
    def parse_models(body: Any) -> "tuple[Optional[str], Optional[int]]":
        """As the base, but the usable length is ``max_model_len - 1``.

        sglang rejects an input AT or over its context length (ENGINES.md 3), and
        ``--allow-auto-truncate`` would cut the reward token off the right.
        """
        name, max_len = Adapter.parse_models(body)
        return name, (max_len - 1 if max_len else max_len)

    def build_request(self, inputs: Sequence[EncodedInput]) -> Request:
        """``{"input_ids": [[...]]}`` or ``{"text": [...]}``: exactly one (extra keys are ignored)."""
        kind, items = batch(inputs)
        return Request("POST", self.score_path, {"input_ids" if kind == "ids" else "text": items})

    def _values(self, body: Any, n: int, where: str) -> List[Any]:
        # A list input answers a list; a single input (not sent by us) answers one dict.
        results = [body] if isinstance(body, dict) else body
        if not isinstance(results, list):
            raise ResponseError(where, f"expected a list of results, got {type(body).__name__}", body)
        if len(results) != n:
            raise ResponseError(where, f"expected {n} rewards, got {len(results)}", body)
        return [
            single(get_field(r, "embedding", where, body, f"result {i}"), where, body, f"result {i} 'embedding'")
            for i, r in enumerate(results)
        ]
