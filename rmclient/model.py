"""The model layer: what a reward model is, read once and shared by the client, the server, the hooks and the CLI.

An :class:`Encoder` owns the checkpoint's path, config and tokenizer, the
encoding limits, and the recipe policy (which recipe for which data, when to
warn, whether a reference is wanted). It is built once and never changed:
``Encoder.fixed(recipe)`` gives a copy with the recipe decided (the server's).
"""

from __future__ import annotations

import functools
import logging
import threading
from dataclasses import dataclass, field, replace
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from .errors import ConfigurationError
from .modelinfo import context_length, load_config
from .recipes import ChatTemplateRecipe, Encoded, PolarRecipe, adds_bos, is_polar_model, select_recipe
from .steps import StepFormat, StepRecipe, step_format

logger = logging.getLogger(__name__)

Recipe = Union[PolarRecipe, ChatTemplateRecipe]


@dataclass(frozen=True)
class Encoder:
    """A reward model's encoding: samples in, exact ids out (see :mod:`rmclient.recipes`).

    Build it with :meth:`load`. ``max_length`` is the user's limit; the limit used is
    the smallest of it, the model's context and any ``limit`` a caller passes (a
    server's). ``recipe`` ``None``: chosen per call from the model and the data.
    """

    path: str
    config: Dict[str, Any]
    tokenizer: Any
    max_length: int = 16384
    max_response_length: int = 4096
    response_cut_side: str = "right"
    recipe: Optional[str] = None
    system_prompt: Optional[str] = None
    reward_token_id: Optional[int] = None
    #: A process reward model's step format (``rmclient.steps.FORMATS``); ``None``: from the config.
    steps: Optional[str] = None
    _recipes: Dict[Tuple[str, int], Any] = field(default_factory=dict, compare=False, repr=False)
    _lock: Any = field(default_factory=threading.Lock, compare=False, repr=False)

    @classmethod
    def load(
        cls, path: str, *, tokenizer: Any = None, trust_remote_code: bool = False,
        reward_token_id: Optional[int] = None, **options: Any,
    ) -> "Encoder":
        """Read ``path``'s config and tokenizer (no weights); ``options`` are the other fields."""
        config = load_config(str(path))
        if tokenizer is None:
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(str(path), trust_remote_code=trust_remote_code)
        if reward_token_id is None:
            reward_token_id = config.get("reward_token_id")
        return cls(str(path), config, tokenizer, reward_token_id=reward_token_id, **options)

    def fixed(self, recipe: Optional[str] = None) -> "Encoder":
        """This encoder with its recipe decided now (``recipe``, else the model's own), never from data."""
        return replace(self, recipe=select_recipe(recipe or self.recipe, self.path, self.config, []), _recipes={})

    # -- facts -----------------------------------------------------------------------

    @functools.cached_property
    def model_max_len(self) -> Optional[int]:
        """The longest input the model itself takes (its config's context length)."""
        return context_length(self.config)

    @property
    def architecture(self) -> Optional[str]:
        archs = self.config.get("architectures") or []
        return archs[0] if archs else None

    @property
    def vocab_size(self) -> Optional[int]:
        return self.config.get("vocab_size")

    @property
    def num_labels(self) -> int:
        """The values the head gives per token: several for a multi-objective classifier head.

        Read from the config only for ``*ForSequenceClassification`` (``num_labels``, else ``id2label``);
        a ``*ForRewardModel`` head has one output whatever its config's default labels say, a
        ``*ForProcessRewardModel`` two classes."""
        arch = self.architecture or ""
        if arch.endswith("ProcessRewardModel"):
            return 2
        if not arch.endswith("ForSequenceClassification"):
            return 1
        labels = self.config.get("num_labels")
        if isinstance(labels, int) and labels > 0:
            return labels
        id2label = self.config.get("id2label")
        return len(id2label) if isinstance(id2label, dict) and id2label else 1

    @property
    def labels(self) -> List[str]:
        """The head's label names (the config's ``id2label``; ``LABEL_k`` where it has none)."""
        id2label = self.config.get("id2label") or {}
        return [str(id2label.get(str(k), id2label.get(k, f"LABEL_{k}"))) for k in range(self.num_labels)]

    @functools.cached_property
    def step_format(self) -> Optional[StepFormat]:
        """The model's step format when it is a process reward model, else ``None``."""
        return step_format(self.steps, self.path, self.config)

    def step_recipe(self, max_length: Optional[int] = None) -> StepRecipe:
        """The encoding of process-reward samples for this PRM (:class:`ConfigurationError` if it is none)."""
        fmt = self.step_format
        if fmt is None:
            raise ConfigurationError(
                f"{self.path} ({self.architecture}) is not a process reward model rmclient knows "
                "(Qwen2ForProcessRewardModel, or a Math-Shepherd-style *ForCausalLM with steps='math_shepherd')"
            )
        return self._cached("steps", max_length)

    def limit(self, server_limit: Optional[int] = None) -> Tuple[str, int]:
        """``(what, tokens)``: the longest encoding, the smallest of ``max_length``, the model's
        context and ``server_limit``; ``what`` names which one it is."""
        limits = {"max_length": self.max_length, "the model's context": self.model_max_len,
                  "the servers' limit": server_limit}
        return min(((k, v) for k, v in limits.items() if v), key=lambda kv: kv[1])

    # -- the recipe policy -----------------------------------------------------------

    def recipe_name(self, samples: Sequence[Any]) -> str:
        """The recipe for these samples: the forced one, else POLAR for a POLAR model or data with a reference."""
        return select_recipe(self.recipe, self.path, self.config, samples)

    def recipe_for(self, samples: Sequence[Any], max_length: Optional[int] = None) -> Recipe:
        """The recipe object for ``samples`` at ``max_length`` tokens (default: :meth:`limit`), built once."""
        return self._cached(self.recipe_name(samples), max_length)

    def _cached(self, name: str, max_length: Optional[int]) -> Any:
        """The recipe ``name`` (``"polar"``, ``"chat_template"``, ``"steps"``) at ``max_length`` tokens
        (default: :meth:`limit`), built once."""
        length = max_length or self.limit()[1]
        with self._lock:
            recipe = self._recipes.get((name, length))
            if recipe is None:
                recipe = self._recipes[(name, length)] = self._build(name, length)
        return recipe

    def _build(self, name: str, max_length: int) -> Any:
        if name == "steps":
            fmt = self.step_format
            system = self.system_prompt if self.system_prompt is not None else fmt.system_prompt
            return StepRecipe(self.tokenizer, fmt, max_length=max_length, system_prompt=system)
        if self.recipe is None and name == "polar" and not is_polar_model(self.path, self.config):
            logger.warning(
                "%s is not named as a POLAR model, but the data has 'reference': using the POLAR recipe "
                "(pass recipe='chat_template' to score with the chat template and ignore 'reference')",
                self.path,
            )
        if name == "polar":
            return PolarRecipe(
                self.tokenizer, max_length=max_length, max_response_length=self.max_response_length,
                response_cut_side=self.response_cut_side, reward_token_id=self.reward_token_id,
            )
        return ChatTemplateRecipe(
            self.tokenizer, max_length=max_length, reward_token_id=self.reward_token_id,
            system_prompt=self.system_prompt,
        )

    def wants_reference(self, has_references: bool = True) -> bool:
        """Whether samples for this model carry the reference.

        Yes with the POLAR recipe (``recipe="polar"``, or none forced and a checkpoint named
        POLAR); never with ``recipe="chat_template"``. With no forced recipe and a checkpoint
        not named POLAR it cannot tell: when the data has references (``has_references``)
        that is a :class:`~rmclient.ConfigurationError` rather than a guess (a POLAR
        checkpoint in a folder not named POLAR would silently lose its reference).
        """
        if self.recipe is not None:
            return self.recipe == "polar"
        if is_polar_model(self.path, self.config):
            return True
        if has_references:
            raise ConfigurationError(
                f"{self.path} is not named as a POLAR model and its client has no recipe, but the data "
                "has references: pass recipe='polar' to the client to score each output against its reference "
                "(POLAR), or recipe='chat_template' to score prompt and output with the chat template and "
                "ignore the references"
            )
        return False

    def truncation_limits(self, recipe: Optional[str], server_limit: Optional[int] = None) -> str:
        """What samples are cut to, in words: the length and, for POLAR, the response budget."""
        text = (f"at most {self.limit(server_limit)[1]} tokens (the smallest of max_length, the model's context "
                f"and the servers' limit)")
        if recipe == "polar":
            text += f", and at most {self.max_response_length} tokens of the reference and of the output (POLAR)"
        return text

    # -- encoding --------------------------------------------------------------------

    def encode(self, samples: Sequence[Any], max_length: Optional[int] = None) -> List[Encoded]:
        """Text and exact ids of every sample (validated first: bad input names its index and field)."""
        return self.recipe_for(samples, max_length).encode(samples)

    def ids_as_text(self, inputs: Sequence[Sequence[int]], full: bool) -> Tuple[List[str], List[bool]]:
        """Token ids as the text a text-only server turns back into exactly those ids.

        ``full``: the text carries every special token and the server adds none (OpenRLHF);
        else the server adds BOS itself, like the tokenizer (vLLM's text-only routes).
        Returns the texts and, per input, whether its text gives back exactly its ids.
        """
        tok = self.tokenizer
        bos = tok.bos_token_id if not full and adds_bos(tok) else None
        texts = []
        for x in inputs:
            ids = list(x)
            if bos is not None and ids[:1] == [bos]:
                ids = ids[1:]
            texts.append(tok.decode(ids, skip_special_tokens=False))
        back = tok(texts, add_special_tokens=not full)["input_ids"] if texts else []
        return texts, [list(b) == list(x) for b, x in zip(back, inputs)]
