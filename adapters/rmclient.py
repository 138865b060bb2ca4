"""Our own server, ``rmclient serve``: both halves of its protocol (pure data, no sockets).

Client half (:class:`RmclientAdapter`, ``server_type="rmclient"``): exact token ids
to ``POST /classify`` (the sglang form, ``{"input_ids": [[...]]}``, raw rewards back);
first contact reads ``/server_info`` (``served_model_name``, ``max_req_input_len`` in
sglang's form: the longest input + 1, and ``rmclient_version``) and ``/v1/models``
(``max_model_len``); health is ``GET /health``.

Server half of the native route ``POST /v1/rewards``: :func:`parse_rewards_request`
(``{"samples": [sample, ...]}`` or one sample dict, ``"return_encodings"``) and
:func:`rewards_response` (``{"model", "rewards", "num_tokens"[, "encodings"]}``).
The other routes' server halves are in :mod:`.sglang` and :mod:`.openrlhf`.
"""

from __future__ import annotations

from typing import Any, ClassVar, Dict, List, Mapping, Optional, Sequence, Tuple

from rmclient.errors import ProtocolError

from .base import OUTPUTS, Adapter, EncodedInput, Request, ServerInfo, batch, request_object
from .sglang import classify_values


class RmclientAdapter(Adapter):
    """``rmclient serve``: ``POST /classify`` with exact token ids (raw rewards)."""

    engine: ClassVar[str] = "rmclient"
    info_routes: ClassVar[Tuple[Tuple[str, ...], ...]] = (("/server_info", "/get_server_info"), ("/v1/models",))
    health_path: ClassVar[str] = "/health"
    score_path = "/classify"
    inputs = "ids"

    @classmethod
    def read_info(cls, bodies: Mapping[str, Any]) -> ServerInfo:
        """``/server_info``: the served name, ``max_req_input_len - 1`` (the longest input) and our
        version; else ``/v1/models``' card (its ``max_model_len`` is the longest input itself)."""
        info = bodies.get("/server_info") or bodies.get("/get_server_info")
        info = info if isinstance(info, dict) else {}
        name, longest = cls._model_card(bodies.get("/v1/models"))
        limit = info.get("max_req_input_len")
        if isinstance(limit, int) and not isinstance(limit, bool) and limit > 1:
            longest = limit - 1
        served = info.get("served_model_name")
        if isinstance(served, str):
            name = served
        version = info.get("rmclient_version")
        return ServerInfo(version=version if isinstance(version, str) else None, model=name, max_input_len=longest)

    outputs: ClassVar[Tuple[str, ...]] = OUTPUTS

    def build_request(self, inputs: Sequence[EncodedInput], output: str = "reward") -> Request:
        """``{"input_ids": [[...]]}`` (text, for the xtuner-compatible calls: ``{"text": [...]}``), and
        ``"output"`` when it is not ``"reward"`` (sglang ignores the key; we answer it)."""
        kind, items = batch(inputs)
        body: Dict[str, Any] = {"input_ids" if kind == "ids" else "text": items}
        if output != "reward":
            body["output"] = output
        return Request("POST", self.score_path, body)

    def _values(self, body: Any, n: int, where: str, output: str = "reward") -> List[Any]:
        return classify_values(body, n, where, output)  # sglang's answer


# -- the server half of POST /v1/rewards ---------------------------------------------------


def parse_rewards_request(body: Any) -> Tuple[List[Any], bool]:
    """``(samples, return_encodings)`` of a ``POST /v1/rewards`` body; one sample dict is one sample.

    The samples themselves are checked by the encoder (their index and field named there).
    """
    body = request_object(body)
    samples = body.get("samples")
    if samples is None:
        raise ProtocolError("missing 'samples': a list of samples (or one sample dict)", field="samples")
    if isinstance(samples, dict):
        samples = [samples]
    if not isinstance(samples, list):
        raise ProtocolError(f"'samples' must be a list of dicts, got {type(samples).__name__}", field="samples")
    return samples, bool(body.get("return_encodings"))


#: What ``/v1/rewards`` scores (``"kind"``): one reward per sample (default; a PRM's default is
#: ``"steps"``), the step rewards of a process reward model, the per-token values of a dense head,
#: or every label of a multi-objective head.
KINDS = ("reward", "steps", "tokens", "vector")
#: Step aggregates (``rmclient.steps.AGGREGATES``), named here for the request check.
STEP_AGGREGATES = ("last", "mean", "min", "prod")


def rewards_kind(body: Dict[str, Any], default: str = "reward") -> Tuple[str, str]:
    """``(kind, aggregate)`` of a ``POST /v1/rewards`` body (``"kind"``, ``"aggregate"``: default ``"min"``)."""
    kind = body.get("kind") or default
    if kind not in KINDS:
        raise ProtocolError(f"'kind' must be one of {list(KINDS)}, got {kind!r}", field="kind")
    aggregate = body.get("aggregate") or "min"
    if aggregate not in STEP_AGGREGATES:
        raise ProtocolError(f"'aggregate' must be one of {list(STEP_AGGREGATES)}, got {aggregate!r}",
                            field="aggregate")
    return kind, aggregate


def rewards_request(
    samples: Sequence[Any], return_encodings: bool = False, kind: str = "reward", aggregate: Optional[str] = None,
) -> Dict[str, Any]:
    """The ``POST /v1/rewards`` body for raw ``samples``."""
    body: Dict[str, Any] = {"samples": list(samples)}
    if return_encodings:
        body["return_encodings"] = True
    if kind != "reward":
        body["kind"] = kind
    if aggregate is not None:
        body["aggregate"] = aggregate
    return body


def kind_response(
    model: str, kind: str, results: Sequence[Any], labels: Sequence[str] = (),
    encodings: Optional[Sequence[Tuple[str, Sequence[int]]]] = None,
) -> Dict[str, Any]:
    """The ``/v1/rewards`` answer of a kind other than ``"reward"``, from the client's result objects:

    * ``steps``: ``{"rewards": [aggregate, ...], "steps": [{"rewards": [p | null], "spans", "cut"}]}``
      (``null``: a step cut by the length limit, listed in ``cut``);
    * ``tokens``: ``{"tokens": [{"values", "spans"}]}`` (the output's tokens and their character spans);
    * ``vector``: ``{"labels": [...], "vectors": [[...], ...]}``;

    each with ``"model"``, ``"kind"`` and ``"num_tokens"`` (and ``"encodings"`` when given).
    """
    out: Dict[str, Any] = {"model": model, "kind": kind}
    if kind == "steps":
        out["rewards"] = [r.aggregate for r in results]
        out["steps"] = [{"rewards": r.rewards, "spans": [list(x) for x in r.spans], "cut": r.cut} for r in results]
        out["num_tokens"] = [r.num_tokens for r in results]
    elif kind == "tokens":
        out["tokens"] = [{"values": r.values, "spans": [list(x) for x in r.spans]} for r in results]
        out["num_tokens"] = [r.num_tokens for r in results]
    else:
        out["labels"] = list(labels)
        out["vectors"] = [list(v) for v, _ in results]
        out["num_tokens"] = [n for _, n in results]
    if encodings is not None:
        out["encodings"] = [{"text": text, "input_ids": list(ids)} for text, ids in encodings]
    return out


def rewards_response(
    model: str, rewards: Sequence[float], num_tokens: Sequence[int],
    encodings: Optional[Sequence[Tuple[str, Sequence[int]]]] = None,
) -> Dict[str, Any]:
    """``{"model", "rewards", "num_tokens"}``, plus ``"encodings": [{"text", "input_ids"}]`` when given."""
    out: Dict[str, Any] = {"model": model, "rewards": list(rewards), "num_tokens": list(num_tokens)}
    if encodings is not None:
        out["encodings"] = [{"text": text, "input_ids": list(ids)} for text, ids in encodings]
    return out
