"""Ids joined at word boundaries (rmclient.token_joins) against the tokenizer itself, on both tokenizer kinds.

The recipe joins the pieces' ids instead of tokenizing the final text; test_encoding_shortcut holds the
whole encoding to the training rule. Here: the splits and the windows compose exactly on text made of
the characters that decide boundaries (every kind of whitespace, "▁", contractions, digits, characters
outside the vocabulary), a structure the proof does not cover gives no joins, and the recipe really
tokenizes each prompt once.
"""

from __future__ import annotations

import json
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer

from rmclient.recipes import PolarRecipe
from rmclient.testing import build_internlm2_tokenizer, build_tokenizer
from rmclient.testing.text import words
from rmclient.token_joins import WordJoins, word_joins

from .test_polar_encoding import reference_polar

KINDS = ("byte_level", "internlm2")
PARTS = ["word", "the", "quick", " ", "  ", "\t", "\n", "\r\n", ".", "'s", "'t", "123", "-", "é", "北京", "🙂",
         "\u00a0", "\u3000", "\x1c", "\u200b", "\u2581", "quick\n", " a", "b "]
TEXT = st.lists(st.sampled_from(PARTS) | st.text(max_size=3), max_size=14).map("".join)


@pytest.fixture(scope="module", params=KINDS)
def tok(request):
    return build_tokenizer(chat_template=None) if request.param == "byte_level" else \
        build_internlm2_tokenizer(chat_template=None)


#: Merges of whitespace runs (real vocabularies have them: "▁▁▁▁" for indentation), first in rank: only
#: the word-boundary rule keeps a join exact then. Each kind's vocabulary is tested with and without them.
WHITESPACE_MERGES = {"byte_level": [("Ġ", "Ġ"), ("ĠĠ", "ĠĠ"), ("Ġ", "Ċ"), ("Ċ", "Ġ"), ("ĉ", "Ġ"), ("Ċ", "Ċ")],
                     "internlm2": [("\u2581", "\u2581"), ("\u2581\u2581", "\u2581\u2581"), ("\u2581", "\n"),
                                   ("\n", "\n")]}


@pytest.fixture(scope="module", params=[(k, merged) for k in KINDS for merged in (False, True)],
                ids=lambda p: p[0] + ("+whitespace-merges" if p[1] else ""))
def backend(request):
    kind, merged = request.param
    tok = build_tokenizer(chat_template=None) if kind == "byte_level" else \
        build_internlm2_tokenizer(chat_template=None)
    spec = json.loads(tok.backend_tokenizer.to_str())
    if merged:
        vocab = spec["model"]["vocab"]
        for a, b in WHITESPACE_MERGES[kind]:
            vocab.setdefault(a + b, len(vocab))
        spec["model"]["merges"] = [list(m) for m in WHITESPACE_MERGES[kind]] + spec["model"]["merges"]
    return Tokenizer.from_str(json.dumps(spec))


def _batch(backend):
    return lambda texts, special: [e.ids for e in backend.encode_batch(list(texts), add_special_tokens=special)]


def test_both_kinds_have_joins(backend):
    joins = word_joins(backend, _batch(backend))
    assert joins == WordJoins(lead=0 if backend.normalizer is None else 1)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(a=TEXT, b=TEXT, joiner=st.sampled_from(["\n", "", "\n\n", " "]))
def test_ids_compose_at_word_boundaries(backend, a, b, joiner):
    joins = word_joins(backend, _batch(backend))

    def enc(text):
        return backend.encode(text, add_special_tokens=False).ids

    a_head, a_tail = joins.last_split(a)
    b_head, b_tail = joins.first_split(b)
    assert enc(a) == enc(a_head) + enc(a_tail)
    assert enc(b) == enc(b_head) + enc(b_tail)
    assert enc(a + joiner + b) == enc(a_head) + enc(a_tail + joiner + b_head) + enc(b_tail)


def test_splits_are_at_the_outermost_word_boundaries():
    joins = WordJoins(lead=0)
    assert joins.last_split("one two  three") == ("one two", "  three")  # the space after "o", not after " "
    assert joins.first_split("one two three") == ("one", " two three")
    assert joins.last_split("one\t two ") == ("", "one\t two ")  # a space after whitespace, or last: none
    assert joins.first_split(" lead") == (" lead", "")
    assert joins.last_split("x\u2581 y") == ("", "x\u2581 y")  # after "▁" (a space to SentencePiece): none
    assert WordJoins(lead=1).last_split("one two") == ("one", "two")  # the normaliser's "▁" stands for " "


def test_a_vocabulary_token_across_a_word_boundary_gives_no_joins():
    tok = build_internlm2_tokenizer(chat_template=None)
    spec = json.loads(tok.backend_tokenizer.to_str())
    spec["model"]["vocab"]["x\u2581y"] = len(spec["model"]["vocab"])
    backend = Tokenizer.from_str(json.dumps(spec))
    assert word_joins(backend, _batch(backend)) is None
    spec["normalizer"] = None  # no SentencePiece normaliser, no byte-level pre-tokenizer
    backend = Tokenizer.from_str(json.dumps(spec))
    assert word_joins(backend, _batch(backend)) is None


def test_an_added_token_with_whitespace_gives_no_joins_and_the_recipe_stays_exact():
    tok = build_tokenizer(chat_template=None)
    tok.add_tokens(["<two words>"])
    recipe = PolarRecipe(tok)
    assert recipe._joins is None and recipe._bound is not None
    s = {"prompt": "The quick brown fox", "reference": "jumps", "output": "over the lazy dog"}
    assert recipe.encode([s])[0].ids == reference_polar(tok, s["prompt"], s["reference"], s["output"])[1]


def test_the_recipe_tokenizes_each_prompt_once_and_takes_exact_lengths_from_the_same_call(tok):
    rng = random.Random(3)
    samples = [{"prompt": words(rng, rng.randint(3, 300)), "reference": words(rng, rng.randint(1, 60)),
                "output": words(rng, rng.randint(1, 600))} for _ in range(200)]
    recipe = PolarRecipe(tok, max_length=1024, max_response_length=512)  # the bound leaves some open
    seen, ruled = [], []
    encode, by_rule = recipe._tok.encode, recipe._encode_by_rule
    recipe._tok.encode = lambda texts, special: seen.append(texts) or encode(texts, special)
    recipe._encode_by_rule = lambda polar, known=(): ruled.extend(polar) or by_rule(polar, known)
    got = recipe.encode(samples)
    assert got == PolarRecipe(tok, max_length=1024, max_response_length=512, shortcut=False).encode(samples)
    for s, e in zip(samples, got):
        ids = reference_polar(tok, s["prompt"], s["reference"], s["output"], max_length=1024, max_resp=512)[1]
        assert e.ids == ids or len(ids) > 1024  # over it, the rule's construction we fix (test_polar_encoding)
    proven = sum(recipe.proven_uncut(recipe.validate(samples)))
    truncated = sum(e.truncated for e in got)
    assert proven < len(samples) - truncated  # samples the bound left open were joined from exact lengths
    assert len(ruled) == truncated > 0  # the rule sees only the samples it cuts...
    prompts = {s["prompt"] for s in samples}
    assert not any(prompts.intersection(texts) for texts in seen[1:])  # ...with their pieces' ids given
    # one call, each prompt in it once (plus the windows: a few words around each join), not twice
    once = sum(len(s["prompt"]) + len(s["reference"]) + len(s["output"]) for s in samples)
    assert sum(map(len, seen[0])) < once + 150 * len(samples) < once + sum(len(s["prompt"]) for s in samples)
