"""OpenRLHF ``serve_rm``: ``POST /get_reward`` ``{"query": [text]}`` -> ``{"rewards": [...]}``.

The query is the whole text the model sees, special tokens (BOS) included: the
server tokenizes it with ``add_special_tokens=False``. So this adapter takes
text only (``inputs = "full_text"``); the client sends each sample's full text.
Newer servers also answer ``"scores"`` (the same values) and ``"extra_logs"``;
``"rewards"`` is read in both shapes. ``rmclient serve`` speaks this route too.
serve_rm reports no length limit (its ``--max_len``): pass ``max_length=`` to the
client; ``rmclient serve`` answers ``/v1/models`` with its limit.

Both halves live here: the client half (:class:`OpenrlhfAdapter`) and the server half
(:func:`parse_get_reward_request`, :func:`get_reward_response`). Source:
``openrlhf/cli/serve_rm.py`` (``RewardModelProxy.get_reward``, ``/get_reward``).
"""

from __future__ import annotations

from typing import Any, ClassVar, Dict, List, Optional, Sequence, Tuple

from rmclient.errors import ConfigurationError, ProtocolError, ResponseError

from .base import Adapter, EncodedInput, Request, batch, get_field, request_object, text_list


class OpenrlhfAdapter(Adapter):
    """An OpenRLHF reward server (``python -m openrlhf.cli.serve_rm``) or ``rmclient serve``."""

    engine: ClassVar[str] = "openrlhf"
    #: serve_rm has no health, version or models route: any HTTP answer means it is up.
    health_path: ClassVar[str] = "/get_reward"
    #: ``rmclient serve`` answers it (``max_model_len``); serve_rm answers 404, which is ignored.
    info_routes: ClassVar[Tuple[Tuple[str, ...], ...]] = (("/v1/models",),)
    score_path = "/get_reward"
    inputs = "full_text"

    def refuses(self, output: str) -> Optional[str]:
        return None if output == "reward" else "OpenRLHF's /get_reward answers one float per query"

    def build_request(self, inputs: Sequence[EncodedInput], output: str = "reward") -> Request:
        """``{"query": [full text, ...]}``."""
        self.check_output(output)
        kind, items = batch(inputs)
        if kind != "text":
            raise ConfigurationError("OpenRLHF's /get_reward takes text only (the whole text, BOS included)")
        return Request("POST", self.score_path, {"query": items})

    def _values(self, body: Any, n: int, where: str, output: str = "reward") -> List[Any]:
        rewards = get_field(body, "rewards", where, body)
        if not isinstance(rewards, list):
            raise ResponseError(where, f"'rewards' is not a list: {type(rewards).__name__}", body)
        return rewards


# -- the server half ---------------------------------------------------------------------


def parse_get_reward_request(body: Any) -> List[str]:
    """The whole texts of a ``POST /get_reward`` body (``{"query": [...]}``; other keys are ignored).

    A single string is one query. A wrong shape raises :class:`~rmclient.errors.ProtocolError`,
    a query that is not a string :class:`~rmclient.errors.InvalidSampleError`.
    """
    query = request_object(body).get("query")
    if query is None:
        raise ProtocolError("missing 'query': a list of the whole texts to score", field="query")
    return text_list(query, "query")[0]


def get_reward_response(rewards: Sequence[float]) -> Dict[str, Any]:
    """The ``/get_reward`` answer of newer serve_rm: ``{"rewards": [...], "scores": [...]}`` (the same values)."""
    values = list(rewards)
    return {"rewards": values, "scores": values}
