"""sglang: native ``POST /classify`` (raw score), never ``/v1/classify`` (softmax); ONE table.

``TABLE`` is read by this adapter and by ``rmclient.launchers.sglang``. Paths are
inside the ``sglang`` package of each release (read from every wheel 0.4.3 to
0.5.23; sglang needs CUDA, so no server runs here). The request is the same in
every version: ``{"input_ids": [[...]]}`` or ``{"text": [...]}``
(``srt/managers/io_struct.py`` ``EmbeddingReqInput``), answered by a list of
``{"embedding": [score], "meta_info"}`` (raw: every reward head pools the last
token with ``normalize=False``). What changes is which architectures are served.

Length: the scheduler refuses ``len(input_ids) >= max_req_input_len`` with
``max_req_input_len = min(context_len - 1, kv_pool_tokens - 1) - 5``
(``srt/managers/tp_worker.py`` 0.4.3:110-114, 0.5.23:568-572; the check is
``srt/managers/utils.py`` ``validate_input_length``, 0.4.3:23, 0.5.23:272), and the
tokenizer manager ``len >= context_len`` (``tokenizer_manager.py`` 0.4.3:344). A list
request fails whole with one 400. From 0.4.7 the scheduler no longer aborts an
over-long embedding request but queues it (``scheduler.py`` 0.5.23:3751-3753), so
the client must stay below the limit itself: ``/server_info`` (0.5.6+; before,
``/get_server_info``, every version) reports ``max_req_input_len``.

Both halves of the protocol live here: the client half (:class:`SglangAdapter`) and
the server half (:func:`parse_classify_request`, :func:`classify_response`), which
``rmclient serve`` and the test fakes use. Pure functions, no sockets.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, replace
from typing import Any, ClassVar, Dict, FrozenSet, List, Mapping, Optional, Sequence, Tuple, Union

from rmclient.errors import InvalidSampleError, ProtocolError, ResponseError

from .base import Adapter, EncodedInput, Request, ServerInfo, batch, get_field, request_object, single, text_list
from .versions import VersionRow

logger = logging.getLogger(__name__)

#: Reward/classification architectures of every release (srt/models/llama_reward.py,
#: gemma2_reward.py, internlm2_reward.py in 0.4.3).
_BASE = frozenset({"LlamaForSequenceClassification", "Gemma2ForSequenceClassification", "InternLM2ForRewardModel"})
#: Heads that sglang builds with a bias HF checkpoints lack (``nn.Linear(hidden, num_labels)``,
#: srt/models/qwen2_classification.py 0.4.4.post2:41, qwen3_classification.py 0.5.4:41): the bias
#: keeps its random initial value, a constant offset on every score (rankings are unaffected).
BIASED_HEADS = frozenset({"Qwen2ForSequenceClassification", "Qwen3ForSequenceClassification"})


@dataclass(frozen=True)
class SglangRow(VersionRow):
    """sglang ``[min_version, max_version)``: the reward architectures it serves."""

    architectures: FrozenSet[str]
    source: str = ""
    note: str = ""


#: The ONE sglang table. Post releases matter: Qwen2ForRewardModel is in 0.4.3.post3, not 0.4.3.
TABLE: Tuple[SglangRow, ...] = (
    SglangRow("0.4.3", "0.4.3.post3", _BASE,
              source="srt/models/{llama,gemma2,internlm2}_reward.py 0.4.3",
              note="Llama/Gemma2 seq-cls, InternLM2ForRewardModel"),
    SglangRow("0.4.3.post3", "0.4.4.post2", _BASE | {"Qwen2ForRewardModel"},
              source="srt/models/qwen2_rm.py 0.4.3.post3:28",
              note="+ Qwen2ForRewardModel"),
    SglangRow("0.4.4.post2", "0.5.1", _BASE | {"Qwen2ForRewardModel", "Qwen2ForSequenceClassification"},
              source="srt/models/qwen2_classification.py 0.4.4.post2:28",
              note="+ Qwen2ForSequenceClassification (its head has a bias HF checkpoints lack)"),
    SglangRow("0.5.1", "0.5.9",
              _BASE | {"Qwen2ForRewardModel", "Qwen2ForSequenceClassification", "Qwen3ForSequenceClassification"},
              source="srt/models/qwen3_classification.py 0.5.1",
              note="+ Qwen3ForSequenceClassification (biased head as Qwen2's)"),
    SglangRow("0.5.9", None,
              _BASE | {"Qwen2ForRewardModel", "Qwen2ForSequenceClassification", "Qwen3ForSequenceClassification",
                       "Qwen3ForRewardModel"},
              source="srt/models/qwen3_rm.py 0.5.9:26; seen in the source to 0.5.23",
              note="+ Qwen3ForRewardModel (read to 0.5.23)"),
)

#: Unknown version: the request is the same on every version; the newest row's architectures.
UNKNOWN = replace(TABLE[-1], note="unknown version: native /classify, the same request on every version")

#: What the scheduler subtracts beyond ``context_len``: ``(context_len - 1) - 5``, then ``len < limit``.
_BELOW_CONTEXT = 7
#: Why sglang gives no per-token (dense, process) values; multi-label heads come whole and raw on /classify
#: (``embedding`` is ``embeddings.tolist()`` of ``Linear(hidden, num_labels)``, scheduler.py 0.4.3.post2:1221).
NO_TOKENS = (
    "sglang pools the LAST token only: its pooler has no ALL type (srt/layers/pooler.py, 0.4.3 - 0.5.9), "
    "qwen2_rm.py has Qwen2ForRewardModel only (no process reward model in any release), and 0.5.23's "
    "`token_indices_to_pool` is ignored by Qwen2ForRewardModel, InternLM2ForRewardModel and Llama/Gemma2 "
    "seq-cls (layers/pooler.py 0.5.23:157-200): serve dense or process rewards with vLLM or rmclient serve"
)


#: Every architecture the table knows.
KNOWN = frozenset().union(*(row.architectures for row in TABLE))


def supports(row: SglangRow, architecture: Optional[str]) -> bool:
    """Whether ``row``'s versions serve ``architecture``: refused only where the table knows a later start."""
    return architecture not in KNOWN or architecture in row.architectures


def first_version_serving(architecture: Optional[str]) -> Optional[str]:
    """The first version of ``TABLE`` that serves ``architecture``, or ``None``."""
    return next((row.min_version for row in TABLE if supports(row, architecture)), None)


def bias_warning(architecture: Optional[str]) -> Optional[str]:
    """The warning for an architecture whose sglang head carries an unloaded bias, if it is one."""
    if architecture not in BIASED_HEADS:
        return None
    return (
        f"sglang builds the {architecture} score head with a bias that HF checkpoints do not have; it keeps "
        "its random initial value, so every score carries the same unknown offset (rankings are unaffected)"
    )


class SglangAdapter(Adapter):
    """sglang ``--is-embedding`` server: ``POST /classify`` with token ids or text."""

    engine: ClassVar[str] = "sglang"
    info_routes: ClassVar[Tuple[Tuple[str, ...], ...]] = (("/server_info", "/get_server_info"), ("/v1/models",))
    table: ClassVar[Sequence[VersionRow]] = TABLE
    unknown_row: ClassVar[Optional[VersionRow]] = UNKNOWN
    score_path = "/classify"

    def __init__(
        self, version: Optional[str] = None, *, model: Optional[str] = None, architecture: Optional[str] = None
    ) -> None:
        super().__init__(version, model=model, architecture=architecture)
        warning = bias_warning(architecture)
        if warning:
            logger.warning(warning)

    @classmethod
    def read_info(cls, bodies: Mapping[str, Any]) -> ServerInfo:
        """``/server_info`` (or ``/get_server_info``): ``version`` and ``max_req_input_len`` (longest
        accepted: one less); else ``/v1/models``' ``max_model_len`` (0.4.4.post3+) less 7."""
        info = bodies.get("/server_info") or bodies.get("/get_server_info")
        name, context = cls._model_card(bodies.get("/v1/models"))
        limit = info.get("max_req_input_len") if isinstance(info, dict) else None
        if isinstance(limit, int) and not isinstance(limit, bool) and limit > 1:
            longest: Optional[int] = limit - 1
        else:
            longest = context - _BELOW_CONTEXT if context and context > _BELOW_CONTEXT else None
        if isinstance(info, dict) and name is None:
            served = info.get("served_model_name")
            name = served if isinstance(served, str) else None
        return ServerInfo(version=cls._version_field(info), model=name, max_input_len=longest)

    outputs: ClassVar[Tuple[str, ...]] = ("reward", "vector")

    def refuses(self, output: str) -> Optional[str]:
        if output in self.outputs:
            return None
        return NO_TOKENS

    def build_request(self, inputs: Sequence[EncodedInput], output: str = "reward") -> Request:
        """``{"input_ids": [[...]]}`` or ``{"text": [...]}``: exactly one (extra keys are ignored)."""
        self.check_output(output)
        kind, items = batch(inputs)
        return Request("POST", self.score_path, {"input_ids" if kind == "ids" else "text": items})

    def _values(self, body: Any, n: int, where: str, output: str = "reward") -> List[Any]:
        return classify_values(body, n, where, output)


def classify_values(body: Any, n: int, where: str, output: str = "reward") -> List[Any]:
    """The raw values of a ``/classify`` answer in input order (checked by the adapter after):
    ``embedding`` is ``[reward]``, every label (``"vector"``) or, from ``rmclient serve``, one list
    per token (``"tokens"``)."""
    # A list input answers a list; a single input (not sent by us) answers one dict.
    results = [body] if isinstance(body, dict) else body
    if not isinstance(results, list):
        raise ResponseError(where, f"expected a list of results, got {type(body).__name__}", body)
    if len(results) != n:
        raise ResponseError(where, f"expected {n} rewards, got {len(results)}", body)
    values = [get_field(r, "embedding", where, body, f"result {i}") for i, r in enumerate(results)]
    if output != "reward":
        return values
    return [single(v, where, body, f"result {i} 'embedding'") for i, v in enumerate(values)]


# -- the server half ---------------------------------------------------------------------


def parse_classify_request(body: Any) -> Tuple[str, List[Any], bool]:
    """A ``POST /classify`` body as ``(kind, items, single)``: ``kind`` ``"text"`` or ``"ids"``.

    Exactly one of ``text`` / ``input_ids`` (other keys are ignored); a single string or
    id list is one input (``single``: answer one dict). A wrong shape raises
    :class:`~rmclient.errors.ProtocolError`, a wrong item
    :class:`~rmclient.errors.InvalidSampleError` naming its index and field.
    """
    body = request_object(body)
    text, ids = body.get("text"), body.get("input_ids")
    if (text is None) == (ids is None):
        raise ProtocolError("Either text or input_ids should be provided.", field="text")
    if text is not None:
        return ("text", *text_list(text, "text"))
    if not isinstance(ids, list):
        raise ProtocolError("'input_ids' must be a list of token ids or a list of such lists", field="input_ids")
    single = bool(ids) and not isinstance(ids[0], list)
    seqs = [ids] if single else ids
    for i, seq in enumerate(seqs):
        if not isinstance(seq, list):
            raise InvalidSampleError(i, "input_ids", f"expected a list of token ids, got {type(seq).__name__}")
        if set(map(type, seq)) - {int}:  # bool and float are not token ids (a set: C speed on big bodies)
            bad = next(t for t in seq if type(t) is not int)
            raise InvalidSampleError(i, "input_ids", f"token ids must be integers, got {bad!r}")
    return "ids", seqs, single


def classify_response(
    rewards: Sequence[Any], lengths: Sequence[int], single: bool = False, latency: Optional[float] = None,
) -> Union[Dict[str, Any], List[Dict[str, Any]]]:
    """The ``/classify`` answer: ``[{"embedding": [reward], "meta_info": {...}}, ...]``, one dict if ``single``.

    A reward that is a list (a vector, or per-token lists) is the embedding itself.
    ``lengths``: each input's token count (``meta_info.prompt_tokens``); ``latency``: seconds.
    """
    results = []
    for r, n in zip(rewards, lengths):
        meta: Dict[str, Any] = {"id": uuid.uuid4().hex, "prompt_tokens": n}
        if latency is not None:
            meta["e2e_latency"] = latency
        results.append({"embedding": r if isinstance(r, list) else [r], "meta_info": meta})
    return results[0] if single else results
