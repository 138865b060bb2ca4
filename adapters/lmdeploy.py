"""lmdeploy: ``POST /pooling`` -> ``{"data": [{"index", "data": <float>}]}`` (raw last-token score); ONE table.

``TABLE`` is read by this adapter and by ``rmclient.launchers.lmdeploy``. Paths are
inside the ``lmdeploy`` package of each release (read from every wheel 0.9.1 to
0.18.0; lmdeploy needs CUDA, so no server runs here). The request is the same in
every version (``serve/openai/protocol.py`` ``PoolingRequest``: ``model``, ``input``;
unknown fields ignored). Reward models are only ``InternLM2ForRewardModel`` and
``Qwen2ForRewardModel`` (``pytorch/models/module_map.py``, every version).

No route reports the version (the client takes ``engine_version=`` or assumes the
row that is safe everywhere) nor a length limit: an input over the engine's
``max_session_len`` fails with a 500 (``pytorch/engine/engine_instance.py``
0.13.0:196), so the client keeps to the model's own context (the default
``session_len`` from 0.10.0 is derived from the model config, ``utils.py``
``_get_and_verify_max_len``). A one-token input also gives a 500 (``squeeze()[-1]``
of a 0-d tensor): inputs need two tokens at least.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Dict, FrozenSet, List, Optional, Sequence, Tuple

from .base import Adapter, EncodedInput, Request, batch, get_field, indexed_data
from .versions import VersionRow

REWARD_ARCHITECTURES: FrozenSet[str] = frozenset({"InternLM2ForRewardModel", "Qwen2ForRewardModel"})


@dataclass(frozen=True)
class LmdeployRow(VersionRow):
    """lmdeploy ``[min_version, max_version)``."""

    #: ``/pooling`` requests one server may run at once (``None``: no limit).
    max_in_flight: Optional[int]
    #: ``--api-keys`` guards ``/pooling``.
    key_guards_pooling: bool
    #: ``--trust-remote-code`` exists (before, remote code is always trusted).
    trust_remote_code_flag: bool
    source: str = ""
    note: str = ""


#: The ONE lmdeploy table.
TABLE: Tuple[LmdeployRow, ...] = (
    LmdeployRow(
        "0.9.1", "0.12", 1, False, False,
        source="serve/utils.py 0.9.1:70 (session ids = batch positions) + serve/async_engine.py 0.9.1:581 "
        "(`assert session_id not in self.id2inst`); api_server.py 0.9.1:67 (per-route key check, none on /pooling)",
        note="two concurrent /pooling requests collide (HTTP 500): one request in flight per server; "
        "--api-keys does not guard /pooling",
    ),
    LmdeployRow(
        "0.12", "0.12.2", None, False, False,
        source="serve/core/async_engine.py 0.12.0:632 (a fresh session per input); api_server.py 0.12.0:92",
        note="concurrent /pooling fixed; --api-keys still does not guard /pooling",
    ),
    LmdeployRow(
        "0.12.2", "0.13", None, True, False,
        source="api_server.py 0.12.2:1494 + serve/utils/server_utils.py 0.12.2:21-36 (a middleware guards "
        "every route but /health, /docs, /redoc, /nodes)",
        note="--api-keys guards /pooling; remote code always trusted (no --trust-remote-code)",
    ),
    LmdeployRow(
        "0.13", None, None, True, True,
        source="cli/utils.py 0.13.0:776 + cli/serve.py 0.13.0:84 (--trust-remote-code); read to 0.18.0",
        note="`--trust-remote-code` (default off); read to 0.18.0",
    ),
)

#: Unknown version (lmdeploy has no version route): one request in flight, safe on every version.
UNKNOWN = LmdeployRow("0.9.1", None, 1, False, False, note="unknown version: one request in flight, safe on every version")


class LmdeployAdapter(Adapter):
    """lmdeploy ``api_server`` (pytorch backend): ``POST /pooling`` with token ids or text.

    lmdeploy has no version route: pass ``version`` when known, otherwise the safe
    choice (one request in flight) is made and logged.
    """

    engine: ClassVar[str] = "lmdeploy"
    table: ClassVar[Sequence[VersionRow]] = TABLE
    unknown_row: ClassVar[Optional[VersionRow]] = UNKNOWN
    score_path = "/pooling"
    #: A one-token input crashes the server (HTTP 500).
    min_input_len: ClassVar[int] = 2

    def __init__(
        self, version: Optional[str] = None, *, model: Optional[str] = None, architecture: Optional[str] = None
    ) -> None:
        super().__init__(version, model=model, architecture=architecture)
        self.max_in_flight = self.row.max_in_flight

    def refuses(self, output: str) -> Optional[str]:
        if output == "reward":
            return None
        return ("lmdeploy's /pooling returns one float per sample, the last token's value "
                "(the engine keeps `x.squeeze()` then `x[-1].item()`: serve/core/async_engine.py 0.18.0:862-863), for its two reward architectures "
                "(InternLM2ForRewardModel, Qwen2ForRewardModel; one label each): no per-token, per-label or "
                "process rewards in any version 0.9.1 - 0.18")

    def build_request(self, inputs: Sequence[EncodedInput], output: str = "reward") -> Request:
        """``{"model"?, "input": [[ids...]] | [str...]}``; text gets BOS from the server's tokenizer."""
        self.check_output(output)
        _, items = batch(inputs)
        body: Dict[str, Any] = {"model": self.model} if self.model else {}
        body["input"] = items
        return Request("POST", self.score_path, body)

    def _values(self, body: Any, n: int, where: str, output: str = "reward") -> List[Any]:
        items = indexed_data(body, n, where)
        return [get_field(item, "data", where, body, f"data[{i}]") for i, item in enumerate(items)]
