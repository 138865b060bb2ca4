"""vLLM: ``POST /pooling`` (default) or ``POST /classify``, raw rewards via ``"use_activation": false``.

``softmax`` and ``activation`` are never sent: on 0.11.1-0.13 any value of them turns
the activation ON (ENGINES.md section 4). vLLM ignores unknown request fields (its
``OpenAIBaseModel`` has ``extra="allow"``), so a field an old version lacks is harmless.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, ClassVar, Dict, List, Optional, Sequence

from rmclient.errors import ConfigurationError

from .base import Adapter, EncodedInput, Request, VersionRow, batch, get_field, indexed_data, single

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class VllmRow(VersionRow):
    """Behaviour of vLLM versions ``[min_version, max_version)``."""

    #: Send ``"use_activation": false`` (the request-level raw switch).
    use_activation: bool
    #: ``model`` must be in the request.
    model_required: bool
    #: ``/classify`` accepts token ids.
    classify_ids: bool
    #: Raw rewards only when the server was launched with the pooler flag.
    raw_needs_launch_flag: bool
    note: str


#: vLLM quirk table (ENGINES.md section 4).
TABLE = (
    VllmRow("0.7", "0.8", False, True, False, False,
            "`--task reward`: raw by default; `model` is required"),
    VllmRow("0.8", "0.10.1", False, False, False, False,
            "`--task reward` (`--task classify` for seq-cls from 0.10.0): raw by default"),
    VllmRow("0.10.1", "0.11.1", False, False, False, True,
            "`--runner pooling`: raw only if launched with "
            "`--override-pooler-config '{\"softmax\": false}'`; no request-level switch"),
    VllmRow("0.11.1", "0.16", True, False, False, False,
            "request `use_activation: false`; `softmax`/`activation` would turn activation ON"),
    VllmRow("0.16", None, True, False, True, False,
            "`use_activation` is the only accepted name (seen to 0.33); /classify takes token ids"),
)

#: Unknown version: the request right on most versions (0.11.1 and later; ignored before).
UNKNOWN = VllmRow("0.7", None, True, False, True, False,
                  "unknown version: use_activation false, model sent when known")

ENDPOINTS = {"pooling": "/pooling", "classify": "/classify"}


class VllmAdapter(Adapter):
    """vLLM pooling server (``--runner pooling`` / ``--task reward``).

    ``endpoint="pooling"`` (default) works for ``*ForRewardModel`` (per-token rewards,
    the last one is the reward) and sequence classifiers; ``"classify"`` is for
    sequence classifiers only (``data[i].probs[0]``).
    """

    engine: ClassVar[str] = "vllm"
    version_path: ClassVar[Optional[str]] = "/version"
    table: ClassVar[Sequence[VersionRow]] = TABLE
    unknown_row: ClassVar[Optional[VersionRow]] = UNKNOWN

    def __init__(
        self, version: Optional[str] = None, *, model: Optional[str] = None, endpoint: str = "pooling"
    ) -> None:
        super().__init__(version, model=model)
        if endpoint not in ENDPOINTS:
            raise ConfigurationError(f"vLLM endpoint {endpoint!r} unknown; valid: {sorted(ENDPOINTS)}")
        self.endpoint = endpoint
        self.score_path = ENDPOINTS[endpoint]
        if self.row.model_required and not model:
            raise ConfigurationError(f"vLLM {version} requires model= (the served name from /v1/models)")
        if self.row.raw_needs_launch_flag:
            logger.warning(
                "vLLM %s returns raw rewards only if the server was launched with "
                "--override-pooler-config '{\"softmax\": false}'", version,
            )

    def build_request(self, inputs: Sequence[EncodedInput]) -> Request:
        """``{"model"?, "input", "encoding_format"?, "add_special_tokens", "use_activation"?}``.

        Text gets ``add_special_tokens: true`` (the server adds BOS, as xtuner relies on);
        token ids are sent as they are.
        """
        kind, items = batch(inputs)
        if self.endpoint == "classify" and kind == "ids" and not self.row.classify_ids:
            raise ConfigurationError(f"vLLM {self.version} /classify does not accept token ids; use /pooling")
        body: Dict[str, Any] = {"model": self.model} if self.model else {}
        body["input"] = items
        if self.endpoint == "pooling":
            body["encoding_format"] = "float"
        body["add_special_tokens"] = kind == "text"
        if self.row.use_activation:
            body["use_activation"] = False
        return Request("POST", self.score_path, body)

    def _values(self, body: Any, n: int, where: str) -> List[Any]:
        items = indexed_data(body, n, where)
        if self.endpoint == "classify":
            return [single(get_field(it, "probs", where, body, f"data[{i}]"), where, body, f"data[{i}] 'probs'")
                    for i, it in enumerate(items)]
        return [_pooled(get_field(it, "data", where, body, f"data[{i}]"), where, body, f"data[{i}] 'data'")
                for i, it in enumerate(items)]


def _pooled(value: Any, where: str, body: Any, what: str) -> Any:
    """``[r]`` (seq-cls) -> r; ``[[r0], ..., [rT]]`` (*ForRewardModel, one per token) -> rT."""
    if isinstance(value, list) and value and isinstance(value[-1], list):
        return single(value[-1], where, body, f"{what} (last token)")
    return single(value, where, body, what)
