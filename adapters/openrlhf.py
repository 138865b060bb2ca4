"""OpenRLHF ``serve_rm``: ``POST /get_reward`` ``{"query": [text]}`` -> ``{"rewards": [...]}``.

The query is the whole text the model sees, special tokens (BOS) included: the
server tokenizes it with ``add_special_tokens=False``. So this adapter takes
text only (``accepts_ids = False``); the client sends each sample's full text.
Newer servers also answer ``"scores"`` (the same values) and ``"extra_logs"``;
``"rewards"`` is read in both shapes. ``rmclient serve`` speaks this route too.
"""

from __future__ import annotations

from typing import Any, ClassVar, List, Optional, Sequence

from rmclient.errors import ConfigurationError, ResponseError

from .base import Adapter, EncodedInput, Request, batch, get_field


class OpenrlhfAdapter(Adapter):
    """An OpenRLHF reward server (``python -m openrlhf.cli.serve_rm``) or ``rmclient serve``."""

    engine: ClassVar[str] = "openrlhf"
    #: serve_rm has no health, version or models route: any HTTP answer means it is up.
    health_path: ClassVar[str] = "/get_reward"
    version_path: ClassVar[Optional[str]] = None
    models_path: ClassVar[Optional[str]] = None
    accepts_ids: ClassVar[bool] = False
    score_path = "/get_reward"

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
