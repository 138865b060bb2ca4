"""The POLAR encoding shortcut (rmclient.token_bound) against the training rule, on both tokenizer kinds.

Where the bound proves that no piece is cut and every piece decodes back to itself, the recipe
joins the raw pieces and tokenizes once; everything else goes through the rule. These tests
hold it to the independent construction of the rule (``reference_polar``) on random text, on
text made of the characters that break round trips, and at the cut boundary from both sides.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rmclient import RewardModelClient
from rmclient.recipes import PolarRecipe
from rmclient.testing import build_internlm2_tokenizer, build_polar_model, build_tokenizer
from rmclient.testing.text import words
from rmclient.token_bound import token_bound

from .test_polar_encoding import reference_polar

KINDS = ("byte_level", "internlm2")
#: Characters that break a round trip or a bound: "▁" (decodes to " "), added-token strings,
#: leading and repeated spaces, line ends, characters outside the vocabulary (byte fallback).
TRICKY = ["\u2581", "<|reward|>", "[UNUSED_TOKEN_130]", "<s>", " ", "  ", "\n", "\r\n", "\t", "🙂", "\U0001f9ea",
          "ǅ", "ﬁ", "é", "北京", "\u00a0", "\u200b", "x", "the", "quick\n", "."]


@pytest.fixture(scope="module", params=KINDS)
def tok(request):
    return build_tokenizer(chat_template=None) if request.param == "byte_level" else \
        build_internlm2_tokenizer(chat_template=None)


def _sample(rng: random.Random, tricky: bool) -> dict:
    def piece(n: int) -> str:
        if tricky and rng.random() < 0.5:
            return "".join(rng.choices(TRICKY, k=rng.randint(0, 12)))
        return words(rng, n) if n else ""

    s = {"prompt": piece(rng.randint(0, 60)), "reference": piece(rng.choice([0, 3, 20])),
         "output": piece(rng.randint(0, 80))}
    if rng.random() < 0.1:
        s["wrapper"] = "pretrain"
    return s


def _check(tok, samples, *, max_length: int, max_resp: int) -> PolarRecipe:
    """The shortcut's encodings == the training rule's; where the rule lands over ``max_length`` (the
    construction we fix, see test_polar_encoding), == our rule without the shortcut, within the limit."""
    recipe = PolarRecipe(tok, max_length=max_length, max_response_length=max_resp)
    rule = PolarRecipe(tok, max_length=max_length, max_response_length=max_resp, shortcut=False)
    assert recipe._bound is not None and rule._bound is None
    got, by_rule = recipe.encode(samples), rule.encode(samples)
    for k, (s, e, r) in enumerate(zip(samples, got, by_rule)):
        text, ids = reference_polar(tok, s["prompt"], s["reference"], s["output"], wrapper=s.get("wrapper", "sft"),
                                    max_length=max_length, max_resp=max_resp)
        if len(ids) <= max_length:
            assert (e.text, e.ids) == (text + "[UNUSED_TOKEN_130]", ids), (k, s)
        assert e == r and len(e.ids) <= max_length, (k, s)
    return recipe


@pytest.mark.parametrize("max_length,max_resp", [(16384, 4096), (400, 120), (96, 30)])
def test_shortcut_equals_the_training_rule_on_random_and_tricky_text(tok, max_length, max_resp):
    rng = random.Random(max_length)
    samples = [_sample(rng, tricky=k % 2 == 1) for k in range(300)]
    recipe = _check(tok, samples, max_length=max_length, max_resp=max_resp)
    proven = recipe.proven_uncut(recipe.validate(samples))
    # both paths are exercised: plain text is proven, tricky text and long text are not
    assert 0 < sum(proven) < len(samples)
    breaking = ["<|reward|>", "[UNUSED_TOKEN_130]", "<s>"] + (["\u2581"] if "\u2581" in tok.get_vocab() else [])
    joined = [s["prompt"] + s["reference"] + s["output"] for s in samples]
    assert not any(p for p, text in zip(proven, joined) if any(b in text for b in breaking))


def test_at_the_cut_boundary_from_both_sides(tok):
    """Budgets set exactly at the bound (proven), one below (rule), at the true length and one below it (cut)."""
    rng = random.Random(5)
    recipe0 = PolarRecipe(tok)
    bound = recipe0._bound
    checked = 0
    for _ in range(40):
        s = _sample(rng, tricky=False)
        r, o, p = (bound.upper(s[k]) for k in ("reference", "output", "prompt"))
        true = [len(tok.encode(s[k])) for k in ("reference", "output")]
        for max_resp in {max(r, o), max(r, o) - 1, max(true), max(true) - 1}:
            for budget in {2 * p + r + o, 2 * p + r + o - 1, 2 * p + r + o - 2}:
                max_length = max(budget + 4, 8)
                if max_resp < 1:
                    continue
                recipe = _check(tok, [s], max_length=max_length, max_resp=max_resp)
                proven = recipe.proven_uncut(recipe.validate([s]))[0]
                if max_resp >= max(r, o) and budget == 2 * p + r + o:
                    assert proven  # exactly at the bound: still proven
                if max_resp < max(r, o) or budget < 2 * p + r + o - 1:
                    assert not proven
                checked += 1
    assert checked > 200


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.lists(st.sampled_from(TRICKY) | st.text(max_size=4), max_size=12).map("".join))
def test_the_bound_and_the_round_trip_hold(tok, text):
    bound = PolarRecipe(tok)._bound
    ids = tok.encode(text, add_special_tokens=True)
    assert len(ids) <= bound.upper(text)
    if bound.round_trips(text):
        assert tok.decode(ids, skip_special_tokens=True) == text


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    pieces=st.lists(st.lists(st.sampled_from(TRICKY) | st.sampled_from(["word ", "a b c ", "x\ny "]), max_size=30)
                    .map("".join), min_size=3, max_size=3),
    max_length=st.integers(8, 200),
    max_resp=st.integers(1, 80),
)
def test_fuzz_against_the_rule(tok, pieces, max_length, max_resp):
    _check(tok, [dict(zip(("prompt", "reference", "output"), pieces))], max_length=max_length, max_resp=max_resp)


def test_most_ordinary_samples_are_proven(tok):
    rng = random.Random(11)
    samples = [{"prompt": words(rng, rng.randint(3, 300)), "reference": words(rng, rng.randint(1, 60)),
                "output": words(rng, rng.randint(1, 600))} for _ in range(500)]
    recipe = _check(tok, samples, max_length=16384, max_resp=4096)
    assert sum(recipe.proven_uncut(recipe.validate(samples))) == len(samples)
    tight = _check(tok, samples, max_length=2048, max_resp=1024)
    assert 0 < sum(tight.proven_uncut(tight.validate(samples))) < len(samples)


def test_no_bound_for_a_normaliser_that_can_expand_text():
    from tokenizers import normalizers, pre_tokenizers

    nfkc = build_tokenizer(chat_template=None)
    nfkc.backend_tokenizer.normalizer = normalizers.NFKC()  # "ﬁ" -> "fi": more tokens than the bound allows
    assert PolarRecipe(nfkc)._bound is None
    lossy = build_tokenizer(chat_template=None)
    lossy.backend_tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()  # drops the spaces
    assert PolarRecipe(lossy)._bound is None
    assert token_bound(object(), lambda t, s: [], lambda i: []) is None
    s = {"prompt": "ﬁne  words", "reference": "ﬁ", "output": "ok"}
    for t in (nfkc, lossy):  # without a bound every sample takes the rule, still exact
        assert PolarRecipe(t).encode([s])[0].ids == reference_polar(t, s["prompt"], s["reference"], s["output"])[1]


def test_a_saved_internlm2_like_model_keeps_the_bound(tmp_path):
    path = build_polar_model(tmp_path / "polar-sp", tokenizer="internlm2")
    client = RewardModelClient(str(path))
    tok = client.tokenizer
    assert PolarRecipe(tok)._bound is not None
    s = {"prompt": "The quick brown fox", "reference": "jumps", "output": "over the lazy dog"}
    assert client.encode_ids(s) == reference_polar(tok, s["prompt"], s["reference"], s["output"])[1]
