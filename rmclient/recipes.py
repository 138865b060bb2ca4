"""Recipes: turn validated samples into exactly the text and token ids a reward model was trained on.

* :class:`PolarRecipe` reproduces POLAR's training construction (xtuner
  ``tokenize_ref``) with its client-side defects fixed.
* :class:`ChatTemplateRecipe` renders outcome-RM samples with the tokenizer's
  own chat template.

:func:`select_recipe` picks one from the model config and the data.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

from .batch_tokenizer import BatchTokenizer
from .data import PolarSample, has_reference, to_chat, to_polar
from .errors import ConfigurationError, InvalidSampleError
from .token_bound import token_bound
from .token_joins import word_joins

logger = logging.getLogger(__name__)

#: POLAR's reward token (config.json of internlm/POLAR-7B: ``reward_token_id`` 92527).
POLAR_REWARD_TOKEN = "[UNUSED_TOKEN_130]"
#: The separator between the reference half and the output half.
POLAR_SEPARATOR = "<|reward|>"
RECIPES = ("polar", "chat_template")


@dataclass(frozen=True)
class Encoded:
    """One encoded sample.

    ``ids`` are the exact token ids the model sees (BOS and reward token
    included). ``text`` is the string form that a server which adds BOS itself
    turns into the same ids (xtuner's ``encode`` output).
    """

    text: str
    ids: List[int]
    #: Whether the sample was cut to fit the budgets (``max_length``, POLAR's ``max_response_length``).
    truncated: bool = False


#: A sample's prompt, reference and output ids, each tokenized with BOS as the rule does.
Pieces = Tuple[List[int], List[int], List[int]]


def adds_bos(tokenizer: Any) -> bool:
    """Whether plain ``tokenizer.encode`` prepends a BOS token."""
    bos = tokenizer.bos_token_id
    return bos is not None and tokenizer.encode("a")[:1] == [bos]


def _cut(ids: List[int], limit: int, side: str) -> List[int]:
    """``ids`` cut to ``limit`` tokens: ``"right"`` keeps the head, ``"left"`` the tail."""
    if len(ids) <= limit:
        return ids
    if limit <= 0:
        return []
    return ids[:limit] if side == "right" else ids[-limit:]


class PolarRecipe:
    """POLAR encoding, identical to the training construction (xtuner ``tokenize_ref``).

    Per sample: each piece is tokenized with special tokens; the reference and
    the output are cut to ``max_response_length`` tokens (``"right"`` keeps the
    head, as training does; ``"left"`` keeps the tail, as xtuner's client
    does); the prompt keeps its tail within ``(max_length - 4 - len(ref) -
    len(out)) // 2``; the pieces are decoded back to text; then
    ``prompt + "\\n" + reference + "<|reward|>" + prompt + "\\n" + output``
    ("\\n" omitted for ``wrapper="pretrain"`` or an empty piece) is encoded with
    BOS and the reward token id appended.

    Unlike the published client, a budget of zero or less keeps no prompt (not
    the whole prompt), and the result never has more than ``max_length`` ids:
    when re-tokenization lands over budget the prompt, then the longer
    response, is cut further until it fits.

    Most samples need none of the piece work: where :mod:`~rmclient.token_bound` proves that no
    budget cuts a piece and that each piece decodes back to itself, the pieces are joined as they
    are and the final text is tokenized once, which gives the rule's ids exactly. Where
    :mod:`~rmclient.token_joins` also proves where ids compose, the final ids are joined from the
    pieces' ids instead (the prompt is tokenized once, not twice), and the samples the bound leaves
    open get their exact piece lengths from the same single tokenization (``shortcut=False`` runs
    the whole rule on every sample).
    """

    name = "polar"

    def __init__(
        self,
        tokenizer: Any,
        *,
        max_length: int = 16384,
        max_response_length: int = 4096,
        response_cut_side: str = "right",
        reward_token_id: Optional[int] = None,
        shortcut: bool = True,
    ) -> None:
        if response_cut_side not in ("right", "left"):
            raise ConfigurationError(f"response_cut_side must be 'right' or 'left', got {response_cut_side!r}")
        if max_length < 8:
            raise ConfigurationError(f"max_length must be at least 8, got {max_length}")
        if reward_token_id is None:
            reward_token_id = tokenizer.convert_tokens_to_ids(POLAR_REWARD_TOKEN)
            if reward_token_id is None or reward_token_id == tokenizer.unk_token_id:
                raise ConfigurationError(
                    f"the tokenizer has no {POLAR_REWARD_TOKEN} token and the config no reward_token_id; "
                    "pass reward_token_id="
                )
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.max_response_length = max_response_length
        self.cut_side = response_cut_side
        self.reward_token_id = int(reward_token_id)
        self.reward_token = tokenizer.convert_ids_to_tokens(self.reward_token_id)
        self._tok = BatchTokenizer(tokenizer)
        self._bos = [tokenizer.bos_token_id] if adds_bos(tokenizer) else []
        self._sep = tokenizer.convert_tokens_to_ids(POLAR_SEPARATOR)
        self._split = self._separator_splits()
        # the reward token in the text gives its id and leaves the text before it alone (no lstrip)
        self._reward_in_text = all(
            tokenizer.encode(t + self.reward_token) == tokenizer.encode(t) + [self.reward_token_id]
            for t in ("a b", "a b ", "a\n")
        )
        backend = self._tok.backend
        self._bound = token_bound(backend, self._tok.encode, self._tok.decode) if shortcut and backend else None
        # joining ids needs the halves to split at the separator and BOS to be the only special token
        composable = self._bound is not None and self._split and self._bound.specials == len(self._bos)
        self._joins = word_joins(backend, self._tok.encode) if composable else None

    def _separator_splits(self) -> bool:
        """Whether ``encode(a + "<|reward|>" + b) == BOS + encode(a) + [sep] + encode(b)`` for this tokenizer.

        True when the separator is an added token with no stripping and the
        tokenizer adds nothing but BOS; then each half is tokenized on its own
        and the reference half, shared by a GRPO group, only once.
        """
        probes = [("q\nref", "q\nout"), ("a ", " b"), ("x\n", "\ny"), ("", "z"), ("w", "")]
        tok = self.tokenizer
        for a, b in probes:
            split = self._bos + tok.encode(a, add_special_tokens=False) + [self._sep]
            split += tok.encode(b, add_special_tokens=False)
            if tok.encode(a + POLAR_SEPARATOR + b) != split:
                return False
        return True

    def _final(self, halves: Sequence["tuple[str, str]"]) -> "tuple[List[str], List[List[int]]]":
        """The text ``ref_half + "<|reward|>" + out_half + reward token`` of each pair, and its ids.

        Reference halves shared by a group (GRPO rollouts of one prompt) are tokenized once when
        the separator splits cleanly; otherwise each text is tokenized whole, reward token included.
        """
        texts = [a + POLAR_SEPARATOR + b + self.reward_token for a, b in halves]
        tail = [self.reward_token_id]
        if self._split and 4 * len({h[0] for h in halves}) < 3 * len(halves):
            refs = self._tok.encode([h[0] for h in halves], False)
            outs = self._tok.encode([h[1] for h in halves], False)
            return texts, [self._bos + r + [self._sep] + o + tail for r, o in zip(refs, outs)]
        if self._reward_in_text:
            return texts, self._tok.encode(texts, True)
        cut = len(self.reward_token)
        return texts, [x + tail for x in self._tok.encode([t[:-cut] for t in texts], True)]

    def validate(self, samples: Sequence[Any], start: int = 0) -> List[PolarSample]:
        """Check and normalise ``samples``; error indices count from ``start``."""
        return [to_polar(start + i, s) for i, s in enumerate(samples)]

    def encode(self, samples: Sequence[Any], start: int = 0) -> List[Encoded]:
        """Validate and encode ``samples``; error indices count from ``start``."""
        return self.encode_valid(self.validate(samples, start))

    def encode_valid(self, polar: Sequence[PolarSample]) -> List[Encoded]:
        """Encode samples that :meth:`validate` returned."""
        out: List[Optional[Encoded]] = [None] * len(polar)
        pieces: Dict[int, Pieces] = {}
        if self._joins is not None:
            pieces = self._join_ids(polar, out)
        else:
            fast = [i for i, uncut in enumerate(self.proven_uncut(polar)) if uncut]
            halves = [(_join(polar[i].prompt, polar[i].reference, polar[i].wrapper),
                       _join(polar[i].prompt, polar[i].output, polar[i].wrapper)) for i in fast]
            for i, text, ids in zip(fast, *self._final(halves)):
                if len(ids) <= self.max_length:  # else the rule shrinks it (_fit)
                    out[i] = Encoded(text, ids, False)
        rest = [i for i, e in enumerate(out) if e is None]
        for i, e in zip(rest, self._encode_by_rule([polar[i] for i in rest], [pieces.get(i) for i in rest])):
            out[i] = e
        return out  # type: ignore[return-value]

    def _join_ids(self, polar: Sequence[PolarSample], out: List[Optional[Encoded]]) -> Dict[int, Pieces]:
        """Fill ``out`` with the samples the rule leaves uncut, their ids joined at word boundaries.

        One tokenization covers every sample whose pieces round-trip: each piece's parts at its word
        boundary and the windows around the two joins (plus, where the bound leaves a cut open, the
        parts that give each piece's exact length). Returns the pieces' ids (BOS included, as the
        rule tokenizes them) of the samples left to the rule.
        """
        bound, joins = self._bound, self._joins
        assert bound is not None and joins is not None
        budget, resp = self.max_length - 4, self.max_response_length
        jobs, texts = [], []
        for k, s in enumerate(polar):
            if not self._round_trips(s):
                continue  # the rule decodes such a piece to other text
            proven = self._fits_bound(s)
            ph, pt = joins.last_split(s.prompt)
            rh, rt = joins.first_split(s.reference)
            oh, ot = joins.first_split(s.output)
            wr = pt + _joiner(s.reference, s.wrapper) + rh
            wo = pt + _joiner(s.output, s.wrapper) + oh
            if s.wrapper == "pretrain" and (bound.holds_forbidden(wr) or bound.holds_forbidden(wo)):
                continue  # an added token's text made by the join itself
            jobs.append((k, proven, len(texts)))
            texts += (ph, wr, rt, wo, ot) if proven else (ph, wr, rt, wo, ot, pt, rh, oh)
        ids = self._tok.encode(texts, False)
        bos, sep, tail, specials = self._bos, self._sep, self.reward_token_id, len(self._bos)
        reward = self.reward_token
        left: Dict[int, Pieces] = {}
        for k, proven, at in jobs:
            ph, wr, rt, wo, ot = ids[at:at + 5]
            if not proven:
                pt, rh, oh = ids[at + 5:at + 8]
                p, r, o = specials + len(ph) + len(pt), specials + len(rh) + len(rt), specials + len(oh) + len(ot)
                if r > resp or o > resp or p > (budget - r - o) // 2:
                    left[k] = (bos + ph + pt, bos + rh + rt, bos + oh + ot)
                    continue
            final = [*bos, *ph, *wr, *rt, sep, *ph, *wo, *ot, tail]  # one list, no intermediate ones
            if len(final) <= self.max_length:  # else the rule shrinks it (_fit)
                s = polar[k]
                text = f"{s.prompt}{_joiner(s.reference, s.wrapper)}{s.reference}{POLAR_SEPARATOR}" \
                    f"{s.prompt}{_joiner(s.output, s.wrapper)}{s.output}{reward}"
                out[k] = Encoded(text, final, False)
        return left

    def proven_uncut(self, polar: Sequence[PolarSample]) -> List[bool]:
        """Per sample, whether the token bound proves that no budget cuts a piece and every piece
        decodes back to itself (then the rule's final text is the pieces joined as they are)."""
        if self._bound is None:
            return [False] * len(polar)
        return [self._round_trips(s) and self._fits_bound(s) for s in polar]

    def _round_trips(self, s: PolarSample) -> bool:
        bound = self._bound
        assert bound is not None
        return bound.round_trips(s.prompt) and bound.round_trips(s.reference) and bound.round_trips(s.output)

    def _fits_bound(self, s: PolarSample) -> bool:
        """Whether the token bound proves that no budget cuts a piece of ``s``."""
        bound = self._bound
        assert bound is not None
        r, o = bound.upper(s.reference), bound.upper(s.output)
        resp = self.max_response_length
        return r <= resp and o <= resp and bound.upper(s.prompt) <= (self.max_length - 4 - r - o) // 2

    def _encode_by_rule(self, polar: Sequence[PolarSample], known: Sequence[Optional[Pieces]] = ()) -> List[Encoded]:
        """The training rule, step by step: tokenize the pieces, cut them, decode them, join, tokenize.

        ``known[i]``: sample ``i``'s piece ids (BOS included) where already tokenized.
        """
        given = list(known) or [None] * len(polar)
        todo = [i for i, x in enumerate(given) if x is None]
        m = len(todo)
        flat = self._tok.encode([polar[i].prompt for i in todo] + [polar[i].reference for i in todo]
                                + [polar[i].output for i in todo], True) if todo else []
        for j, i in enumerate(todo):
            given[i] = (flat[j], flat[m + j], flat[2 * m + j])
        prompts, refs, outs = (list(x) for x in zip(*given)) if given else ([], [], [])
        budget = self.max_length - 4
        cut = [
            self._cut_pieces(p, r, o, budget, self.max_response_length)
            for p, r, o in zip(prompts, refs, outs)
        ]
        halves = self._halves(polar, cut, list(zip(prompts, refs, outs)))
        texts, ids = self._final(halves)
        truncated = [
            (len(c[0]), len(c[1]), len(c[2])) != (len(p), len(r), len(o))
            for c, p, r, o in zip(cut, prompts, refs, outs)
        ]
        for i in [i for i, x in enumerate(ids) if len(x) > self.max_length]:
            texts[i], ids[i] = self._fit(polar[i], prompts[i], refs[i], outs[i], cut[i])
            truncated[i] = True
        return [Encoded(t, x, cut) for t, x, cut in zip(texts, ids, truncated)]

    def _cut_pieces(self, p: List[int], r: List[int], o: List[int], budget: int, resp: int):
        r = _cut(r, resp, self.cut_side)
        o = _cut(o, resp, self.cut_side)
        prompt_budget = (budget - len(r) - len(o)) // 2
        return _cut(p, prompt_budget, "left"), r, o

    def _halves(self, polar: Sequence[PolarSample], cut: Sequence[tuple],
                whole: Sequence[tuple]) -> List["tuple[str, str]"]:
        """``(prompt [+ "\\n"] + reference, prompt [+ "\\n"] + output)`` from the decoded cut pieces.

        A piece the budgets left ``whole`` that provably decodes back to itself is used as it is.
        """
        bound = self._bound
        texts = [[s.prompt, s.reference, s.output] for s in polar]
        todo = [
            (k, j) for k, (c, w) in enumerate(zip(cut, whole)) for j in range(3)
            if bound is None or len(c[j]) != len(w[j]) or not bound.round_trips(texts[k][j])
        ]
        for (k, j), text in zip(todo, self._tok.decode([cut[k][j] for k, j in todo])):
            texts[k][j] = text
        return [(_join(p, r, s.wrapper), _join(p, o, s.wrapper)) for s, (p, r, o) in zip(polar, texts)]

    def _fit(self, sample: PolarSample, p, r, o, cut) -> tuple:
        """Shrink one over-long sample until its ids fit ``max_length`` exactly: ``(text, ids)``."""
        budget, resp = self.max_length - 4, self.max_response_length
        text, ids = "", []
        for _ in range(64):
            halves = self._halves([sample], [cut], [(p, r, o)])
            (text,), (ids,) = self._final(halves)
            excess = len(ids) - self.max_length
            if excess <= 0:
                return text, ids
            if cut[0]:
                budget -= 2 * excess
            else:
                resp = max(len(cut[1]), len(cut[2])) - excess
            cut = self._cut_pieces(p, r, o, budget, resp)
        raise ConfigurationError(f"cannot fit a POLAR sample into max_length={self.max_length}")


def _joiner(piece: str, wrapper: str) -> str:
    return "" if wrapper == "pretrain" or piece == "" else "\n"


def _join(prompt: str, piece: str, wrapper: str) -> str:
    return prompt + _joiner(piece, wrapper) + piece



_MARK = "\u27e6rmclient-output\u27e7"


@dataclass(frozen=True)
class _Chat:
    """A validated chat sample with its messages as they will be rendered (system prompt included)."""

    index: int
    messages: List[Dict[str, str]]
    text: str


class ChatTemplateRecipe:
    """Outcome-RM encoding with the tokenizer's own chat template.

    The conversation (an optional system prompt, the prompt turns, the
    assistant output) is rendered by the template; BOS appears exactly once;
    the model's reward token is appended when its config declares one and the
    sequence does not already end with it. Over ``max_length`` the prompt
    turns lose text from the left, oldest turn first, so the template, the
    system prompt and the scored output stay intact; only when that is not
    enough are the ids cut from the left (BOS kept).
    """

    name = "chat_template"

    def __init__(
        self,
        tokenizer: Any,
        *,
        max_length: int = 16384,
        reward_token_id: Optional[int] = None,
        system_prompt: Optional[str] = None,
    ) -> None:
        if not getattr(tokenizer, "chat_template", None):
            raise ConfigurationError("the tokenizer has no chat_template; pass recipe='polar' or set one")
        if max_length < 8:
            raise ConfigurationError(f"max_length must be at least 8, got {max_length}")
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.reward_token_id = reward_token_id
        self.system_prompt = system_prompt
        self._adds_bos = adds_bos(tokenizer)
        self._tok = BatchTokenizer(tokenizer)

    def validate(self, samples: Sequence[Any], start: int = 0) -> List[_Chat]:
        """Check ``samples`` and render their template; error indices count from ``start``."""
        out = []
        for i, sample in enumerate(samples):
            messages = [dict(m) for m in to_chat(start + i, sample).messages]
            if self.system_prompt is not None and messages[0]["role"] != "system":
                messages.insert(0, {"role": "system", "content": self.system_prompt})
            out.append(_Chat(start + i, messages, self._render(start + i, messages)))
        return out

    def encode(self, samples: Sequence[Any], start: int = 0) -> List[Encoded]:
        """Validate and encode ``samples``; error indices count from ``start``."""
        return self.encode_valid(self.validate(samples, start))

    def encode_valid(self, chats: Sequence[_Chat]) -> List[Encoded]:
        """Encode samples that :meth:`validate` returned."""
        out = []
        for chat, ids in zip(chats, self._tok.encode([c.text for c in chats], False)):
            text, ids = self._finish(chat.text, ids)
            over = len(ids) > self.max_length
            if over:
                text, ids = self._fit(chat)
            out.append(Encoded(text, ids, over))
        return out

    def output_suffix(self, chat: _Chat) -> str:
        """What the template writes after the scored output (``<|im_end|>\n``...): rendered with a marker
        in place of the output, so the output can be found exactly in the encoded text."""
        messages = [dict(m) for m in chat.messages]
        messages[-1]["content"] = _MARK
        text = self._render(chat.index, messages)
        return text[text.index(_MARK) + len(_MARK):] if _MARK in text else ""

    def _render(self, index: int, messages: List[Dict[str, str]]) -> str:
        try:
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
        except Exception as exc:  # jinja2 errors, raise_exception() in templates
            raise InvalidSampleError(index, "messages", f"the chat template rejected it: {exc}") from exc

    def _finish(self, text: str, ids: List[int]) -> "tuple[str, List[int]]":
        """BOS exactly once, the reward token once; the text form for a server that adds BOS itself."""
        tok, bos = self.tokenizer, self.tokenizer.bos_token_id
        if self._adds_bos and ids[:1] != [bos]:
            ids = [bos] + ids
        if self._adds_bos and text.startswith(tok.bos_token):
            text = text[len(tok.bos_token) :]
        if self.reward_token_id is not None and ids[-1:] != [self.reward_token_id]:
            ids = ids + [self.reward_token_id]
            text += tok.convert_ids_to_tokens(self.reward_token_id)
        return text, ids

    def _fit(self, chat: _Chat) -> "tuple[str, List[int]]":
        tok = self.tokenizer
        messages = [dict(m) for m in chat.messages]
        text, ids = chat.text, []
        for _ in range(32):
            text, ids = self._finish(text, tok.encode(text, add_special_tokens=False))
            excess = len(ids) - self.max_length
            if excess <= 0:
                return text, ids
            turn = next(
                (k for k, m in enumerate(messages[:-1]) if m["role"] != "system" and m["content"]), None
            )
            if turn is None:
                break
            content = tok.encode(messages[turn]["content"], add_special_tokens=False)
            messages[turn]["content"] = tok.decode(content[excess:]) if excess < len(content) else ""
            text = self._render(chat.index, messages)
        logger.warning("sample %d: the output alone exceeds max_length; cutting ids from the left", chat.index)
        head = ids[:1] if self._adds_bos else []
        ids = head + ids[len(ids) - self.max_length + len(head) :]
        return tok.decode(ids[len(head) :]), ids


def is_polar_model(path: str, config: Dict[str, Any]) -> bool:
    """POLAR checkpoints are recognised by name (``internlm/POLAR-7B``, ``POLAR-1_8B``...)."""
    names = [str(path), str(config.get("_name_or_path", ""))]
    return any("polar" in n.lower() for n in names)


def select_recipe(
    recipe: Optional[str], path: str, config: Dict[str, Any], samples: Sequence[Any]
) -> str:
    """The recipe name for these samples: forced, else POLAR for a POLAR model or data whose first
    sample has a reference, else the chat template."""
    if recipe is not None:
        if recipe not in RECIPES:
            raise ConfigurationError(f"unknown recipe {recipe!r}; choose one of {RECIPES}")
        return recipe
    # The data decides by its first sample; validation then names the first sample that differs
    # ([ORM, ORM, POLAR] on a chat model: sample 2's reference, not sample 0).
    if is_polar_model(path, config) or has_reference(samples[:1]):
        return "polar"
    return "chat_template"
