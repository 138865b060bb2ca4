"""OpenRLHF ``serve_rm``: ``POST /get_reward`` ``{"query": [text]}`` -> ``{"rewards": [...]}``.

The query is the whole text the model sees, special tokens (BOS) included: the
server tokenizes it with ``add_special_tokens=False``. So this adapter takes
text only (``inputs = "full_text"``); the client sends each sample's full text.
Newer servers also answer ``"scores"`` (the same values) and ``"extra_logs"``;
``"rewards"`` is read in both shapes. ``rmclient serve`` speaks this route too.
serve_rm reports no length limit (its ``--max_len``): pass ``max_length=`` to the
client; ``rmclient serve`` answers ``/v1/models`` with its limit.
"""

from __future__ import annotations

from typing import Any, ClassVar, List, Sequence, Tuple

from rmclient.errors import ConfigurationError, ResponseError

from .base import Adapter, EncodedInput, Request, batch, get_field


class OpenrlhfAdapter(Adapter):
    """An OpenRLHF reward server (``python -m openrlhf.cli.serve_rm``) or ``rmclient serve``."""

    engine: ClassVar[str] = "openrlhf"
    #: serve_rm has no health, version or models route: any HTTP answer means it is up.
    health_path: ClassVar[str] = "/get_reward"
    #: ``rmclient serve`` answers it (``max_model_len``); serve_rm answers 404, which is ignored.
    info_routes: ClassVar[Tuple[Tuple[str, ...], ...]] = (("/v1/models",),)
    score_path = "/get_reward"
    inputs = "full_text"

    def build_request(self, inputs: Sequence[EncodedInput]) -> Request:
        """``{"query": [full text, ...]}``."""
        kind, items = batch(inputs)
        if kind != "text":
            raise ConfigurationError("OpenRLHF's /get_reward takes text only (the whole text, BOS included)")
        return Request("POST", self.score_path, {"query": items})

    def _values(self, body: Any, n: int, where: str) -> List[Any]:
        rewards = get_field(body, "rewards", where, body)
        if not isinstance(rewards, list):
            raise ResponseError(where, f"'rewards' is not a list: {type(rewards).__name__}", body)
        return rewards
