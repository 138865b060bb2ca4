"""OpenAI-compatible chat completions (``POST /v1/chat/completions``): the protocol of LLM judges.

Any server that speaks it can judge: vLLM, sglang, lmdeploy, ``swift deploy``, a
hosted API. What differs between them is how a verdict is forced (structured
output): the JSON-schema ``response_format`` is the common ground, but a choice
among a few tokens (a probability verdict: one digit, ``A``/``B``) has a field of
each engine's own, and a hosted API has none (the verdict is then read from the
``top_logprobs`` it returns, and refused when the allowed tokens carry too little
of the probability). :data:`TABLE` holds those fields per engine and version,
each row citing the engine file that shows it; the engine is read from
``/v1/models`` (``owned_by``) and its version from ``/version``.

An adapter is pure data: :meth:`OpenaiAdapter.build_request` turns one
:class:`ChatQuery` into a request body, :meth:`OpenaiAdapter.parse_response`
reads the replies (:class:`Choice`) and hands them to the
query's reader, whose ``ValueError`` (:class:`~rmclient.verdicts.VerdictError`) becomes a
:class:`~rmclient.errors.ResponseError` (retried, then reported).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Dict, List, Mapping, Optional, Sequence, Tuple

from rmclient.errors import ConfigurationError, ResponseError

from .base import Adapter, Request, ServerInfo, get_field
from .versions import VersionRow, engine_version

Message = Dict[str, str]


@dataclass(frozen=True)
class Choice:
    """One generated reply, as read from a chat-completions body."""

    text: str
    #: ``"stop"``, ``"length"``, ... (``None``: the server did not say).
    finish_reason: Optional[str] = None
    #: The first generated token's ``top_logprobs``: ``{token text: logprob}`` (``None``: not asked).
    top_logprobs: Optional[Dict[str, float]] = None


@dataclass(frozen=True)
class Constraint:
    """What structured output should force: one of ``choices`` (a one-token verdict), or a JSON
    verdict given both as a JSON ``schema`` and as an equivalent ``regex`` (no free whitespace:
    the regex engines force the compact form, which even a random model completes)."""

    choices: Optional[Tuple[str, ...]] = None
    schema: Optional[Dict[str, Any]] = None
    regex: Optional[str] = None


@dataclass(frozen=True)
class ChatQuery:
    """One judge request as data: the messages, the sampling settings and how to read the replies."""

    messages: Tuple[Message, ...]
    constraint: Constraint
    max_tokens: int
    #: Reads the replies: one value per reply; raises ``ValueError`` (:class:`~rmclient.verdicts.VerdictError`)
    #: when they hold no verdict.
    read: Callable[[List[Choice]], Any] = field(compare=False, repr=False)
    temperature: float = 0.0
    seed: Optional[int] = None
    n: int = 1
    #: Ask for the first token's ``top_logprobs`` (a probability verdict).
    top_logprobs: Optional[int] = None
    #: More body fields, sent as given (``top_p``, ``chat_template_kwargs``, ...).
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        """Characters of the messages: the work the pool balances (text, as for a text engine)."""
        return sum(len(m.get("content") or "") for m in self.messages)


@dataclass(frozen=True)
class ChatRow(VersionRow):
    """How one engine's chat completions force a verdict in ``[min_version, max_version)``."""

    engine: str = ""
    #: The body fields forcing a regex (``None``: the engine has none; a JSON schema is used instead).
    regex_fields: Optional[Callable[[str], Dict[str, Any]]] = field(default=None, compare=False)
    #: The body fields forcing one of a few strings (``None``: the regex, if any; ``{}``: nothing, the
    #: choices' top_logprobs are read as returned).
    choice_fields: Optional[Callable[[List[str]], Dict[str, Any]]] = field(default=None, compare=False)
    #: The most ``top_logprobs`` it returns.
    max_top_logprobs: int = 20
    note: str = ""

    def fields(self, constraint: Constraint) -> Dict[str, Any]:
        """The body fields that force ``constraint`` on this engine."""
        if constraint.choices is not None:
            if self.choice_fields is not None:
                return self.choice_fields(list(constraint.choices))
            if self.regex_fields is not None:
                return self.regex_fields(choice_regex(constraint.choices))
            return {}
        if constraint.regex is not None and self.regex_fields is not None:
            return self.regex_fields(constraint.regex)
        if constraint.schema is not None:
            return {"response_format": {"type": "json_schema", "json_schema": {
                "name": "verdict", "schema": constraint.schema, "strict": True}}}
        return {}


def choice_regex(choices: Sequence[str]) -> str:
    """A regex matching exactly one of ``choices``."""
    return "(" + "|".join(re.escape(c) for c in choices) + ")"


#: Per engine, oldest first. "openai" is any other server (a hosted API, ``swift deploy`` ...). The
#: sources are the engines' release wheels; where the logprobs of a choice are taken matters little
#: to us (a verdict is renormalised over its choices), but each row says.
TABLE: Tuple[ChatRow, ...] = (
    ChatRow(
        "0.3.3", "0.11.0", engine="vllm", regex_fields=lambda r: {"guided_regex": r},
        choice_fields=lambda c: {"guided_choice": list(c)},
        note="guided_regex / guided_choice (vllm/entrypoints/openai/protocol.py v0.8.5:347,352; since 0.3.3); "
             "logprobs after the grammar mask, before temperature (v1/sample/sampler.py)",
    ),
    ChatRow(
        "0.11.0", None, engine="vllm", regex_fields=lambda r: {"structured_outputs": {"regex": r}},
        choice_fields=lambda c: {"structured_outputs": {"choice": list(c)}},
        note="structured_outputs {regex, choice} (protocol.py v0.11.0:540; chat_completion/protocol.py "
             "v0.32.0:384); guided_* removed in 0.12.0 and ignored without an error; logprobs after the mask "
             "(disallowed tokens -9999)",
    ),
    ChatRow(
        "0.4.3", None, engine="sglang", regex_fields=lambda r: {"regex": r},
        note="regex (python/sglang/srt/openai_api/protocol.py v0.4.3.post2:318; entrypoints/openai/protocol.py "
             "v0.5.23:1006), no choice field; logprobs after the mask; seed ignored in 0.4.3.post2 and, in "
             "0.5.23, honoured only with --enable-deterministic-inference",
    ),
    ChatRow(
        "0.9.1", None, engine="lmdeploy",
        regex_fields=lambda r: {"response_format": {"type": "regex_schema", "regex_schema": r}},
        choice_fields=lambda c: {},
        note="response_format regex_schema (lmdeploy/serve/openai/protocol.py v0.9.1:99-103; PyTorch backend, "
             "TurboMind from 0.16), no choice field; logprobs before the mask (pytorch/engine/logits_process.py "
             "v0.16.0:402) and, from 0.11, only with --logprobs-mode; seed 0 ignored (api_server.py v0.9.1:390)",
    ),
    ChatRow("0", None, engine="openai",
            note="OpenAI's response_format json_schema (strict); no choice constraint: top_logprobs (at most 20) "
                 "as returned"),
)


def chat_row(engine: Optional[str], version: Optional[str]) -> ChatRow:
    """The row of ``engine`` (``None`` or unknown: "openai") covering ``version`` (unknown: its newest;
    older than its first row: the first)."""
    rows = [r for r in TABLE if r.engine == (engine or "openai")] or [r for r in TABLE if r.engine == "openai"]
    parsed = engine_version(version)
    if parsed is not None:
        for row in rows:
            if row.covers(parsed):
                return row
        if parsed < rows[0].since:
            return rows[0]
    return rows[-1]


class OpenaiAdapter(Adapter):
    """Any OpenAI-compatible chat-completions server, used as an LLM judge (one query per request)."""

    engine: ClassVar[str] = "openai"
    #: Every OpenAI-compatible server answers it (a hosted API has no /health).
    health_path: ClassVar[str] = "/v1/models"
    info_routes: ClassVar[Tuple[Tuple[str, ...], ...]] = (("/version",), ("/v1/models",))
    score_path = "/v1/chat/completions"
    inputs = "text"
    outputs: ClassVar[Tuple[str, ...]] = ("reward",)

    def __init__(self, version: Optional[str] = None, *, model: Optional[str] = None,
                 architecture: Optional[str] = None, server_engine: Optional[str] = None,
                 structured: bool = True) -> None:
        super().__init__(version, model=model, architecture=architecture)
        #: The engine behind the API (``vllm``, ``sglang``, ``lmdeploy``; ``None``: unknown / hosted).
        self.server_engine = server_engine
        #: Whether verdicts are forced with the engine's structured output (off: prompt and parser only).
        self.structured = structured
        self.row = chat_row(server_engine, version)

    @classmethod
    def read_info(cls, bodies: Mapping[str, Any]) -> ServerInfo:
        name, max_len = cls._model_card(bodies.get("/v1/models"))
        return ServerInfo(version=cls._version_field(bodies.get("/version")), model=name, max_input_len=max_len,
                          engine=_owner(bodies.get("/v1/models")))

    @staticmethod
    def discovered_options(info: ServerInfo) -> Dict[str, Any]:
        return {"server_engine": info.engine} if info.engine else {}

    def body(self, query: ChatQuery) -> Dict[str, Any]:
        """The request body of ``query``: the same query gives the same body, byte for byte."""
        if not self.model:
            raise ConfigurationError("the judge's model name is unknown: pass model= (the served name)")
        out: Dict[str, Any] = {
            "model": self.model, "messages": [dict(m) for m in query.messages], "max_tokens": query.max_tokens,
            "temperature": query.temperature, "n": query.n,
        }
        if query.seed is not None:
            out["seed"] = query.seed
        if query.top_logprobs is not None:
            out["logprobs"] = True
            out["top_logprobs"] = min(query.top_logprobs, self.row.max_top_logprobs)
        if self.structured:
            out.update(self.row.fields(query.constraint))
        out.update(query.extra)
        return out

    def build_request(self, inputs: Sequence[Any], output: str = "reward") -> Request:
        if len(inputs) != 1 or not isinstance(inputs[0], ChatQuery):
            raise ConfigurationError("a chat-completions request carries exactly one judge query")
        return Request("POST", self.score_path, self.body(inputs[0]))

    def read(self, body: Any, inputs: Sequence[Any], endpoint: str = "", output: str = "reward") -> List[Any]:
        """``[verdict]`` of the one query in ``inputs``; :class:`ResponseError` if the body holds none."""
        query = inputs[0]
        choices = replies(body, query.n, endpoint)
        try:
            return [query.read(choices)]
        except ValueError as exc:  # VerdictError: no valid verdict in the replies
            raise VerdictFailure(endpoint, f"{NO_VERDICT}: {exc}", body) from None


#: What the failure of a reply without a verdict says (the judge retries those with a new seed).
NO_VERDICT = "no valid verdict"


class VerdictFailure(ResponseError):
    """A well-formed answer whose replies hold no valid verdict: the same request would fail the
    same way (a seed, or greedy decoding), so the transport does not retry it; the judge may, with
    another seed."""

    retryable = False


def _owner(card_body: Any) -> Optional[str]:
    try:
        owner = card_body["data"][0].get("owned_by")
    except (KeyError, IndexError, TypeError, AttributeError):
        return None
    return owner.lower() if isinstance(owner, str) and owner.lower() in ("vllm", "sglang", "lmdeploy") else None


def replies(body: Any, n: int, where: str) -> List[Choice]:
    """The ``n`` replies of a chat-completions body, by ``index``."""
    choices = get_field(body, "choices", where, body)
    if not isinstance(choices, list) or len(choices) != n:
        raise ResponseError(where, f"expected {n} choices, got {choices!r:.200}", body)
    out: List[Optional[Choice]] = [None] * n
    for pos, c in enumerate(choices):
        idx = c.get("index", pos) if isinstance(c, dict) else None
        if isinstance(idx, bool) or not isinstance(idx, int) or not 0 <= idx < n or out[idx] is not None:
            raise ResponseError(where, f"choice {pos} has a bad or repeated index {idx!r}", body)
        message = get_field(c, "message", where, body, f"choices[{pos}]")
        text = message.get("content") if isinstance(message, dict) else None
        out[idx] = Choice(text if isinstance(text, str) else "", c.get("finish_reason"), _first_top(c.get("logprobs")))
    return out  # type: ignore[return-value]


def _first_top(logprobs: Any) -> Optional[Dict[str, float]]:
    """``{token: logprob}`` of the first generated token's ``top_logprobs`` (``None``: none sent)."""
    try:
        first = logprobs["content"][0]
        tops = first["top_logprobs"]
    except (KeyError, IndexError, TypeError):
        return None
    out: Dict[str, float] = {}
    for t in tops if isinstance(tops, list) else []:
        if isinstance(t, dict) and isinstance(t.get("token"), str) and isinstance(t.get("logprob"), (int, float)):
            out.setdefault(t["token"], float(t["logprob"]))
    return out
