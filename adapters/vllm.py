"""vLLM: how each version serves a reward model RAW (launch flags and request), in ONE table.

``TABLE`` is read by this adapter (route, request fields, inputs) and by
``rmclient.launchers.vllm`` (flags). Each row cites the vLLM files that show it
(paths inside the ``vllm`` package of that release) and was checked on real CPU
servers of the versions named in ``seen`` (``tests/matrix/vllm.sh``).

Three kinds of checkpoint: ``*ForSequenceClassification`` ("seq-cls": one score per
sequence), ``*ForRewardModel`` ("reward": InternLM2/POLAR, Qwen2-RM; one score per
token, the last is the reward), and ``*ForCausalLM`` converted to a classifier.
Where a version cannot return the raw score of a kind (it applies a sigmoid or
softmax that nothing turns off, or does not serve the architecture), the row says
so and both the launcher and this adapter refuse, naming the versions that work.
``softmax`` and ``activation`` are never sent from 0.11.1: on 0.11.1-0.13 any value of
them turns the activation ON (``config/pooler.py`` 0.11.1:109 ``get_use_activation``).
vLLM ignores unknown request fields in every version (``OpenAIBaseModel``:
``extra="allow"``), so a field an old version lacks is harmless.
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Dict, List, Mapping, Optional, Sequence, Tuple

from rmclient.errors import ConfigurationError, InvalidSampleError, ProtocolError, ResponseError

from .base import (
    Adapter, EncodedInput, Request, ServerInfo, batch, get_field, indexed_data, model_kind, request_object, text_list,
)
from .versions import VersionRow

logger = logging.getLogger(__name__)


#: A seq-cls head served for classify gives no per-token values: that needs the launch to choose the
#: token_classify task, which then turns classify off (seen on 0.32: the other task answers 400).
SEQ_CLS_NO_TOKENS = (
    "vLLM serves a classifier (*ForSequenceClassification, or a converted LM) for ONE pooling task, chosen at "
    "launch: per-token values need "
    "`--pooler-config '{\"task\": \"token_classify\"}'`, which turns classify off (seen on 0.32)"
)


@dataclass(frozen=True)
class Route:
    """A scoring route and the request fields that make its reward raw."""

    path: str
    fields: Mapping[str, Any] = field(default_factory=dict)
    #: The route takes token ids (else text only).
    ids: bool = True


@dataclass(frozen=True)
class Serving:
    """How a version range serves one kind of reward model, or why it cannot give the raw reward."""

    #: Flags that make vLLM serve the checkpoint as a pooling model.
    launch: Tuple[str, ...] = ()
    #: Launch flags that turn the pooler's activation off.
    raw_launch: Tuple[str, ...] = ()
    #: Routes that give the raw reward, preferred first.
    routes: Tuple[Route, ...] = ()
    #: What makes the reward raw: ``"request"`` (the route's fields), ``"launch"`` (only
    #: ``raw_launch``; the client cannot check it and looks for a sigmoid's signature) or
    #: ``"default"`` (raw anyway).
    raw_by: str = "request"
    #: Non-empty: no raw reward in this range, and why.
    refused: str = ""
    #: The route of per-token values (``"tokens"``: every label at every token), raw; ``None``: not
    #: served, ``no_tokens`` says why. Every label at the last token (``"vector"``) comes on ``routes``.
    tokens: Optional[Route] = None
    no_tokens: str = SEQ_CLS_NO_TOKENS
    #: The PRM is pooled at its step token only (STEP): the launch must name the tokenizer's
    #: ``step_tag_id`` in ``raw_launch``'s pooler config, and the answer has one row per step.
    step_tag: bool = False


@dataclass(frozen=True)
class VllmRow(VersionRow):
    """vLLM ``[min_version, max_version)``: the serving of each kind, and facts of the CLI."""

    seq_cls: Serving
    reward: Serving
    #: ``*ForCausalLM`` converted to a one-label classifier (``--convert classify``).
    causal: Serving
    #: ``*ForProcessRewardModel`` (Qwen2.5-Math-PRM): per-token class logits (``"tokens"`` only).
    process: Serving = field(default_factory=lambda: Serving(refused=NO_PRM))
    #: A Math-Shepherd-style ``*ForCausalLM`` PRM (launched with ``steps="math_shepherd"``): the LM logits
    #: of "+" and "-" at every token, as a two-label classifier.
    shepherd: Serving = field(default_factory=lambda: Serving(refused=NO_SHEPHERD))
    #: Architectures served differently from their kind (e.g. Qwen2 seq-cls before 0.10).
    by_arch: Mapping[str, Serving] = field(default_factory=dict)
    #: ``model`` is required in requests.
    model_required: bool = False
    #: ``--data-parallel-size`` exists.
    data_parallel: bool = True
    #: The vLLM files (and lines) that show this row.
    source: str = ""
    #: Versions of this range seen on real servers (tests/matrix/vllm.sh).
    seen: str = ""
    note: str = ""

    def serving(self, architecture: Optional[str]) -> Serving:
        """The serving of ``architecture`` (its kind's, unless the row names it)."""
        if architecture in self.by_arch:
            return self.by_arch[architecture]
        kind = model_kind(architecture)
        if kind == "seq_cls":
            return self.seq_cls
        if kind == "causal":
            return self.causal
        if kind == "process":
            return self.process
        return self.reward  # "reward", and "unknown": the reward request is valid for both kinds


def _pooler(flag: str, **config: Any) -> Tuple[str, ...]:
    return (flag, json.dumps(config))


POOLING = Route("/pooling")
TASK_REWARD = ("--task", "reward")
TASK_CLASSIFY = ("--task", "classify")
RUNNER = ("--runner", "pooling")
NO_SOFTMAX = _pooler("--override-pooler-config", softmax=False)
NO_ACTIVATION_0_10 = _pooler("--override-pooler-config", softmax=False, activation=False)
NO_ACTIVATION = _pooler("--pooler-config", use_activation=False)
USE_ACTIVATION = {"use_activation": False}
#: From 0.19 a causal LM converted to a classifier over the LM-head rows of "+" and "-"
#: (``no_post_processing``: the raw logits) and served for token_classify at every token.
_SHEPHERD = Serving(
    RUNNER + ("--convert", "classify", "--hf-overrides",
              json.dumps({"classifier_from_token": ["+", "-"], "method": "no_post_processing"})),
    _pooler("--pooler-config", task="token_classify", pooling_type="ALL", use_activation=False),
    tokens=Route("/pooling", {"task": "token_classify", "use_activation": False}),
)
#: From 0.11.1 the PRM's only task is token_classify: every token with ALL pooling, raw by the request.
_PRM_TOKEN_CLASSIFY = Serving(
    RUNNER, _pooler("--pooler-config", pooling_type="ALL", use_activation=False),
    tokens=Route("/pooling", {"task": "token_classify", **USE_ACTIVATION}),
)

NOT_SEQ_CLS_0_9 = (
    "vLLM 0.9.x serves this *ForSequenceClassification through its Transformers fallback, which has "
    "no score head (model_loader/utils.py 0.9.2:246-249; seen: --task classify kills the engine, "
    "--task reward returns hidden states)"
)
NO_RAW_0_10_0 = (
    "vLLM 0.10.0 always applies the classifier's activation (layers/pooler.py 0.10.0:698: "
    "`scores = self.act_fn(pooled_output)`), with no request field or launch flag to turn it off, "
    "and does not serve seq-cls on /pooling (config.py 0.10.0:912-917)"
)
CAUSAL_BEFORE_0_10_1 = "vLLM before 0.10.1 has no --convert classify for a *ForCausalLM checkpoint"
NO_PRM = "this vLLM version serves no process reward model rmclient can read raw (see TABLE)"
NO_SHEPHERD = (
    "rmclient serves Math-Shepherd-style PRMs on vLLM >= 0.19 (seen on 0.32): `--convert classify` with "
    "`classifier_from_token` [\"+\", \"-\"] and the token_classify task in the pooler config (0.19 added it). vLLM's "
    "documented `--task reward` + `returned_token_ids` recipe pools hidden states, not the LM's logits "
    "(vllm#16545, open; --convert reward is gone from 0.16)"
)

_REWARD_TASK = Serving(TASK_REWARD, routes=(POOLING,), raw_by="default", tokens=POOLING)
#: Qwen2ForProcessRewardModel pools STEP (the rows at step_tag_id 151651 only) with a softmax by default:
#: ALL pooling gives every token's two logits, the activation off gives them raw (launch flags only).
PRM_ALL_0_10 = _pooler("--override-pooler-config", pooling_type="ALL", softmax=False)
_PRM_REWARD_TASK = Serving(TASK_REWARD, PRM_ALL_0_10, raw_by="launch", tokens=POOLING)
#: Before 0.10 the model always passes step_tag_id (151651) and ALL pooling asserts it is None
#: (qwen2_rm.py 0.8.5:118-131, layers/pooler.py 0.8.5:55, seen): STEP at the tokenizer's own step token.
_PRM_STEP_0_7 = Serving(TASK_REWARD, NO_SOFTMAX, raw_by="launch", tokens=POOLING, step_tag=True)
#: Qwen2/Qwen3 seq-cls before 0.10: a softmax (0.7-0.8) or sigmoid (0.9) head, off only at launch.
_SEQ_CLS_CLASSIFY_TASK = Serving(TASK_CLASSIFY, NO_SOFTMAX, (POOLING,), raw_by="launch")
_QWEN_SEQ_CLS = ("Qwen2ForSequenceClassification", "Qwen3ForSequenceClassification")
_NO_CAUSAL = Serving(refused=CAUSAL_BEFORE_0_10_1)

#: The ONE vLLM table: version range -> how each kind is served raw (flags, route, fields).
TABLE: Tuple[VllmRow, ...] = (
    VllmRow(
        "0.7.0", "0.8.0",
        seq_cls=Serving(refused="vLLM 0.7 does not serve Llama/Gemma2 *ForSequenceClassification "
                        "(registry.py 0.7.0:345-355: not supported)"),
        reward=_REWARD_TASK,
        process=_PRM_STEP_0_7,
        causal=_NO_CAUSAL,
        by_arch={"Qwen2ForSequenceClassification": _SEQ_CLS_CLASSIFY_TASK},
        model_required=True,
        data_parallel=False,
        source="entrypoints/openai/protocol.py 0.7.0:899 (model: str required); layers/pooler.py "
        "0.7.0:227-231 (softmax over the labels: 1.0 for one label); models/internlm2.py 0.7.0:466-471 (raw)",
        note="`--task reward` for *ForRewardModel (raw); Qwen2 seq-cls `--task classify` + "
        "`{\"softmax\": false}`; `model` required; no --data-parallel-size",
    ),
    VllmRow(
        "0.8.0", "0.8.4",
        seq_cls=_SEQ_CLS_CLASSIFY_TASK,
        reward=_REWARD_TASK,
        process=_PRM_STEP_0_7,
        causal=_NO_CAUSAL,
        data_parallel=False,
        source="engine/arg_utils.py 0.8.4:449 (--data-parallel-size first); otherwise as 0.8.4 - 0.9",
        note="as 0.8.4 - 0.9, without --data-parallel-size",
    ),
    VllmRow(
        "0.8.4", "0.9.0",
        seq_cls=_SEQ_CLS_CLASSIFY_TASK,
        reward=_REWARD_TASK,
        process=_PRM_STEP_0_7,
        causal=_NO_CAUSAL,
        source="layers/pooler.py 0.8.5:243-247 (seq-cls: softmax over the labels unless the pooler "
        "config says softmax false); models/qwen2_rm.py 0.8.5:111-115 (reward: raw)",
        seen="0.8.5",
        note="seq-cls `--task classify --override-pooler-config '{\"softmax\": false}'` (/pooling, [r]); "
        "*ForRewardModel `--task reward` (raw); no /classify",
    ),
    VllmRow(
        "0.9.0", "0.10.0",
        seq_cls=Serving(refused=NOT_SEQ_CLS_0_9),
        reward=_REWARD_TASK,
        process=_PRM_STEP_0_7,
        causal=_NO_CAUSAL,
        by_arch={arch: _SEQ_CLS_CLASSIFY_TASK for arch in _QWEN_SEQ_CLS},
        source="models/adapters.py 0.9.2:176-180 + layers/pooler.py 0.9.2:323-335 (Qwen2/Qwen3 seq-cls: "
        "sigmoid unless the pooler config says softmax false); model_loader/utils.py 0.9.2:246-249",
        seen="0.9.2",
        note="only Qwen2/Qwen3 seq-cls (`--task classify` + `{\"softmax\": false}`) and *ForRewardModel "
        "(`--task reward`)",
    ),
    VllmRow(
        "0.10.0", "0.10.1",
        seq_cls=Serving(refused=NO_RAW_0_10_0),
        reward=_REWARD_TASK,
        process=_PRM_REWARD_TASK,
        causal=Serving(refused=NO_RAW_0_10_0),
        source="layers/pooler.py 0.10.0:698; config.py 0.10.0:912-917; pooler for_encode (reward) raw; "
        "PRM: models/qwen2_rm.py 0.10.0:106-124 (STEP, softmax by default; ALL via the pooler config)",
        seen="0.10.0",
        note="no raw reward for seq-cls; *ForRewardModel `--task reward` (raw)",
    ),
    VllmRow(
        "0.10.1", "0.11.1",
        seq_cls=Serving(RUNNER, NO_ACTIVATION_0_10, (Route("/classify", {"activation": False}, ids=False),)),
        reward=Serving(RUNNER, NO_ACTIVATION_0_10, (POOLING,), raw_by="launch", tokens=POOLING),
        process=Serving(RUNNER, PRM_ALL_0_10, raw_by="launch", tokens=POOLING),
        causal=Serving(RUNNER + ("--convert", "classify"), NO_ACTIVATION_0_10,
                       (Route("/classify", {"activation": False}, ids=False),)),
        source="pooling_params.py 0.10.1.1:139-143 (activation and softmax on by default) and 62-67 "
        "(`activation` for classify, `softmax` for the reward/encode task); protocol.py 0.10.1.1:1585 "
        "(/classify `activation`, text only); api_server.py 0.10.1.1:772 (/pooling 400 for seq-cls); "
        "PRM: qwen2_rm.py 0.10.1.1:106 (STEP), layers/pooler.py 0.10.1.1:70-77 (any pooling_type but STEP is ALL)",
        seen="0.10.1.1, 0.11.0",
        note="`--runner pooling --override-pooler-config '{\"softmax\": false, \"activation\": false}'`; "
        "seq-cls on /classify (text) with `activation: false`; *ForRewardModel raw only by the launch flag",
    ),
    VllmRow(
        "0.11.1", "0.15.0",
        seq_cls=Serving(RUNNER, NO_ACTIVATION, (
            Route("/pooling", {"task": "classify", **USE_ACTIVATION}),
            Route("/classify", USE_ACTIVATION, ids=False),
        )),
        reward=Serving(RUNNER, NO_ACTIVATION, (Route("/pooling", USE_ACTIVATION),), tokens=Route("/pooling", USE_ACTIVATION)),
        process=_PRM_TOKEN_CLASSIFY,
        causal=Serving(RUNNER + ("--convert", "classify"), NO_ACTIVATION, (
            Route("/pooling", {"task": "classify", **USE_ACTIVATION}),
            Route("/classify", USE_ACTIVATION, ids=False),
        )),
        source="config/pooler.py 0.11.1:109-122 (softmax/activation of any value turn it ON, to 0.13); "
        "serving_pooling.py 0.11.1:176-189 (seq-cls /pooling needs task classify); "
        "pooling/classify/protocol.py 0.14.1:20 (/classify input: text only); PRM: qwen2_rm.py "
        "0.11.2:112-123 (token_classify only, STEP), pooling_params.py 0.11.1:188-190 (activation on)",
        seen="0.11.2, 0.12.0, 0.13.0, 0.14.1",
        note="`--runner pooling --pooler-config '{\"use_activation\": false}'`; request "
        "`use_activation: false` (+ `task: classify` for seq-cls on /pooling); /classify text only",
    ),
    _ROW_0_15 := VllmRow(
        "0.15.0", "0.19.0",
        seq_cls=Serving(RUNNER, NO_ACTIVATION, (
            Route("/pooling", {"task": "classify", **USE_ACTIVATION}),
            Route("/classify", USE_ACTIVATION),
        )),
        reward=Serving(RUNNER, NO_ACTIVATION, (Route("/pooling", USE_ACTIVATION),), tokens=Route("/pooling", USE_ACTIVATION)),
        process=_PRM_TOKEN_CLASSIFY,
        causal=Serving(RUNNER + ("--convert", "classify"), NO_ACTIVATION, (
            Route("/pooling", {"task": "classify", **USE_ACTIVATION}),
            Route("/classify", USE_ACTIVATION),
        )),
        source="pooling/base/protocol.py 0.15.0:46 (/classify takes token ids); pooling/base/protocol.py "
        "0.16.0:200-207 (only `use_activation`); config/model.py 0.16.0:77 (--convert reward gone); PRM: "
        "qwen2_rm.py 0.32.0:105-114 (tok_pooling_type STEP at step_tag_id 151651: `data: []` for any other "
        "tokenizer, seen), config/pooler.py 0.32.0:33-124 (pooling_type ALL: every token, seen on 0.32)",
        seen="0.15.1, 0.16.0",
        note="as 0.11.1 - 0.15, and /classify takes token ids (seen to 0.32)",
    ),
    replace(
        _ROW_0_15, min_version="0.19.0", max_version=None,
        causal=replace(_ROW_0_15.causal, tokens=_SHEPHERD.tokens, no_tokens=NO_SHEPHERD),
        shepherd=_SHEPHERD,
        source=_ROW_0_15.source + "; Math-Shepherd: config/pooler.py 0.19.0 (`task` in the pooler config), "
        "models/adapters.py 0.32.0 (classifier_from_token, method no_post_processing)",
        seen="0.20.2, 0.25.0, 0.32.0",
        note="as 0.15; a Math-Shepherd PRM with `--convert classify` and classifier_from_token (seen on 0.32)",
    ),
)

#: No answer on /version: the newest row (older versions ignore its request fields).
UNKNOWN = replace(TABLE[-1], note="unknown version: the newest row's routes and fields (older versions ignore the fields)")

ROUTES = {"pooling": "/pooling", "classify": "/classify"}


class VllmAdapter(Adapter):
    """vLLM pooling server (``--runner pooling`` / ``--task reward|classify``).

    The route and fields come from ``TABLE`` for the server's version and the model's
    architecture; ``endpoint`` (``"pooling"`` or ``"classify"``) asks for one route,
    refused where it cannot give the raw reward.
    """

    engine: ClassVar[str] = "vllm"
    info_routes: ClassVar[Tuple[Tuple[str, ...], ...]] = (("/version",), ("/v1/models",))
    table: ClassVar[Sequence[VersionRow]] = TABLE
    unknown_row: ClassVar[Optional[VersionRow]] = UNKNOWN

    def __init__(
        self,
        version: Optional[str] = None,
        *,
        model: Optional[str] = None,
        architecture: Optional[str] = None,
        endpoint: Optional[str] = None,
    ) -> None:
        super().__init__(version, model=model, architecture=architecture)
        shown = f"vLLM {version or '(unknown version)'}"
        self.serving: Serving = self.row.serving(architecture)
        if self.serving.refused:
            raise ConfigurationError(
                f"{shown} cannot return the raw reward of {architecture}: {self.serving.refused}. "
                f"Versions that can: {works_for(architecture)}"
            )
        self.shown = shown
        self.route = self._route(endpoint, shown) if self.serving.routes else self.serving.tokens  # type: ignore[assignment]
        self.score_path = self.route.path
        self.inputs = "ids" if self.route.ids else "text"
        if self.row.model_required and not model:
            raise ConfigurationError(f"{shown} requires model= (the served name from /v1/models)")
        if model_kind(architecture) == "unknown":
            logger.info("%s: architecture %s unknown; using the request valid for both kinds", shown, architecture)
        if self.serving.raw_by == "launch":
            logger.warning(
                "%s returns the raw reward of %s only if the server was launched with %s (rmclient launch "
                "vllm does); rmclient checks each answer for the activation's signature",
                shown, architecture, " ".join(self.serving.raw_launch),
            )

    def _route(self, endpoint: Optional[str], shown: str) -> Route:
        routes = self.serving.routes
        if endpoint is None:
            return routes[0]
        if endpoint not in ROUTES:
            raise ConfigurationError(f"vLLM endpoint {endpoint!r} unknown; valid: {sorted(ROUTES)}")
        for route in routes:
            if route.path == ROUTES[endpoint]:
                return route
        raise ConfigurationError(
            f"{shown} does not return the raw reward of {self.architecture} on {ROUTES[endpoint]}; "
            f"use {', '.join(r.path for r in routes)}"
        )

    def refuses(self, output: str) -> Optional[str]:
        """Why this version cannot return ``output`` raw for the architecture (its table row says)."""
        if output == "tokens":
            return None if self.serving.tokens is not None else f"{self.shown}: {self.serving.no_tokens}"
        if not self.serving.routes:
            return (f"{self.architecture} is a process reward model: it gives class logits per token, not one "
                    "value per sample (score it with score_steps)")
        return None

    def _output_route(self, output: str) -> Route:
        self.check_output(output)
        return self.serving.tokens if output == "tokens" else self.route  # type: ignore[return-value]

    def build_request(self, inputs: Sequence[EncodedInput], output: str = "reward") -> Request:
        """``{"model"?, "input", "encoding_format"?, "add_special_tokens", <raw fields>}``.

        Text gets ``add_special_tokens: true`` (the server adds BOS, as xtuner relies on);
        token ids are sent as they are. ``output`` other than ``"reward"`` takes its own route.
        """
        route = self._output_route(output)
        kind, items = batch(inputs)
        if kind == "ids" and not route.ids:
            raise ConfigurationError(f"vLLM {self.version} {route.path} does not accept token ids")
        body: Dict[str, Any] = {"model": self.model} if self.model else {}
        body["input"] = items
        if route.path == "/pooling":
            body["encoding_format"] = "float"
        body["add_special_tokens"] = kind == "text"
        body.update(route.fields)
        return Request("POST", route.path, body)

    def _values(self, body: Any, n: int, where: str, output: str = "reward") -> List[Any]:
        route = self._output_route(output)
        key = "probs" if route.path == "/classify" else "data"
        rows = [get_field(it, key, where, body, f"data[{i}]") for i, it in enumerate(indexed_data(body, n, where))]
        if output == "vector":  # [l0, ..., lk], or one such list per token (the last is the sequence's)
            return [v[-1] if isinstance(v, list) and v and isinstance(v[-1], list) else v for v in rows]
        if output == "tokens":
            launch = " ".join(self.serving.launch + self.serving.raw_launch)
            for i, v in enumerate(rows):
                if v == [] and model_kind(self.architecture) == "process":
                    raise ConfigurationError(
                        f"{where}: vLLM answered no values: it pools a PRM at step_tag_id 151651 (Qwen's <extra_0>) "
                        f"by default, which this tokenizer lacks. Launch it with {launch} (rmclient launch vllm does)")
                if not (isinstance(v, list) and v and all(isinstance(t, list) for t in v)):
                    raise ResponseError(where, f"data[{i}] {key!r} is not one list of values per token", body)
            if self.serving.raw_by == "launch" and _softmaxed(rows):
                raise ConfigurationError(
                    f"{where}: every token's values are probabilities summing to 1: vLLM {self.version} applies its "
                    f"softmax. Launch it with {launch} (rmclient launch vllm does)")
            return rows
        per_token = [self._per_token(v, where, body, f"data[{i}] {key!r}") for i, v in enumerate(rows)]
        if self.serving.raw_by == "launch" or self.row is UNKNOWN:
            self._check_not_activated(per_token, where)
        return [values[-1] for values in per_token]

    def _per_token(self, value: Any, where: str, body: Any, what: str) -> List[Any]:
        """``[r]`` (one score) or ``[[r0], ..., [rT]]`` (one per token) -> the scores, last = the reward."""
        per_token = isinstance(value, list) and bool(value) and isinstance(value[-1], list)
        tokens = value if per_token else [value]
        for k, t in enumerate(tokens):
            if not isinstance(t, list) or len(t) != 1:
                label = what if not per_token else f"{what} ({'last token' if k == len(tokens) - 1 else f'token {k}'})"
                hint = ""
                if isinstance(t, list) and len(t) > 1:
                    hint = (
                        f" ({len(t)} values per position: the model is served as a language or embedding model, "
                        f"or its head has {len(t)} labels; a reward model is launched with "
                        f"{' '.join(self.serving.launch + self.serving.raw_launch)}, as rmclient launch vllm does)"
                    )
                raise ResponseError(where, f"{label} is not a one-element list: {t!r}{hint}", body)
        return [t[0] for t in tokens]

    def _check_not_activated(self, per_token: List[List[Any]], where: str) -> None:
        """Refuse answers that clearly carry the activation where only a launch flag removes it; where the
        version is unknown, say so in the log."""
        values = [v for seq in per_token for v in seq if isinstance(v, (int, float)) and not isinstance(v, bool)]
        softmax_of_one = bool(values) and all(v == 1.0 for v in values) and all(len(s) == 1 for s in per_token)
        sigmoid_like = len(values) >= 8 and all(0.0 <= v <= 1.0 for v in values)
        if not (softmax_of_one or sigmoid_like):
            return
        if self.serving.raw_by != "launch":
            logger.warning("%s: every value lies in [0, 1]; if vLLM is older than 0.11.1 it may apply its "
                           "activation (its version is unknown)", where)
            return
        raise ConfigurationError(
            f"{where}: every value vLLM {self.version} returned lies in [0, 1]"
            f"{' (all exactly 1.0: a softmax over one label)' if softmax_of_one else ''}: the server applies "
            f"its activation. Launch it with {' '.join(self.serving.raw_launch)} (rmclient launch vllm does), "
            "or use vLLM >= 0.11.1, where the request turns it off"
        )

    @classmethod
    def read_info(cls, bodies: Mapping[str, Any]) -> ServerInfo:
        """``/version`` and ``/v1/models``: inputs longer than ``max_model_len`` are refused (``>``)."""
        name, max_len = cls._model_card(bodies.get("/v1/models"))
        return ServerInfo(version=cls._version_field(bodies.get("/version")), model=name, max_input_len=max_len)


def _softmaxed(rows: List[Any]) -> bool:
    """Whether per-token rows of two or more values all look like a softmax's (in [0, 1], summing to 1)."""
    flat = [r for seq in rows for r in seq]
    return bool(flat) and all(
        len(r) > 1 and all(isinstance(x, (int, float)) and 0.0 <= x <= 1.0 for x in r) and abs(sum(r) - 1.0) < 1e-4
        for r in flat
    )


def works_for(architecture: Optional[str]) -> str:
    """The version ranges of ``TABLE`` that give the raw reward of ``architecture``, merged: "0.8 - 0.9, >= 0.10.1"."""
    spans: List[List[Optional[str]]] = []
    for row in TABLE:
        if row.serving(architecture).refused:
            continue
        if spans and spans[-1][1] == row.min_version:
            spans[-1][1] = row.max_version
        else:
            spans.append([row.min_version, row.max_version])
    if not spans:
        return "none"
    return ", ".join(f">= {lo}" if hi is None else f"{lo} to < {hi}" for lo, hi in spans)


# -- the server half of POST /pooling (rmclient serve answers it as vLLM does) -----------------

#: The pooling tasks ``rmclient serve`` answers on ``/pooling``.
POOLING_TASKS = ("token_classify", "classify")


@dataclass(frozen=True)
class PoolingRequest:
    """A ``POST /pooling`` body as vLLM reads it (``vllm/entrypoints/pooling/...`` ``PoolingRequest``)."""

    kind: str  # "ids" or "text"
    items: List[Any]
    task: Optional[str]
    #: ``None``: the request does not say (vLLM then applies the head's activation).
    use_activation: Optional[bool]
    add_special_tokens: bool


def parse_pooling_request(body: Any) -> PoolingRequest:
    """``{"input": str | [str] | [ids] | [[ids]], "task"?, "use_activation"?, "add_special_tokens"?}``;
    unknown keys are ignored (vLLM: ``extra="allow"``). Wrong shapes raise ProtocolError or
    InvalidSampleError naming the index and field."""
    body = request_object(body)
    if "input" not in body:
        raise ProtocolError("missing 'input': text, a list of texts, token ids or a list of id lists", field="input")
    value = body["input"]
    if isinstance(value, str) or (isinstance(value, list) and value and all(isinstance(x, str) for x in value)):
        kind, (items, _) = "text", text_list(value, "input")
    elif isinstance(value, list) and value:
        seqs = [value] if not isinstance(value[0], list) else value
        for i, seq in enumerate(seqs):
            if not isinstance(seq, list) or not seq or set(map(type, seq)) - {int}:
                raise InvalidSampleError(i, "input", "expected a non-empty list of integer token ids")
        kind, items = "ids", seqs
    else:
        raise ProtocolError("'input' must be text, a list of texts, token ids or a list of id lists", field="input")
    task = body.get("task")
    if task is not None and task not in POOLING_TASKS:
        raise ProtocolError(f"task {task!r} is not served here; choose one of {list(POOLING_TASKS)}", field="task")
    activation = body.get("use_activation")
    if activation is not None and not isinstance(activation, bool):
        raise ProtocolError("'use_activation' must be true or false", field="use_activation")
    special = body.get("add_special_tokens", True)
    if not isinstance(special, bool):
        raise ProtocolError("'add_special_tokens' must be true or false", field="add_special_tokens")
    return PoolingRequest(kind, items, task, activation, special)


def pooling_response(model: str, outputs: Sequence[Any], lengths: Sequence[int], created: int) -> Dict[str, Any]:
    """vLLM's ``/pooling`` answer: ``{"id", "object": "list", "created", "model", "data": [{"index",
    "object": "pooling", "data"}], "usage"}``."""
    tokens = sum(lengths)
    return {
        "id": f"pool-{uuid.uuid4().hex}", "object": "list", "created": created, "model": model,
        "data": [{"index": i, "object": "pooling", "data": out} for i, out in enumerate(outputs)],
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens, "completion_tokens": 0},
    }
