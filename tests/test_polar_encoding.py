"""POLAR encodings against an independent construction of the training rule (xtuner ``tokenize_ref``)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rmclient import RewardModelClient
from rmclient.recipes import PolarRecipe

REWARD = "[UNUSED_TOKEN_130]"


def flatten(x):
    return x if isinstance(x, str) else "\n".join(m["content"] for m in x)


def reference_polar(tok, prompt, reference, output, *, wrapper="sft", max_length=16384, max_resp=4096, side="right"):
    """The training construction, written out plainly, one sample at a time.

    Differs from xtuner's training code only where the issue asks: a prompt
    budget <= 0 keeps no prompt (xtuner: ``ids[-0:]`` keeps all of it).
    """
    budget = max_length - 4
    p = tok.encode(flatten(prompt), add_special_tokens=True)
    r = tok.encode(flatten(reference), add_special_tokens=True)
    o = tok.encode(flatten(output), add_special_tokens=True)
    if len(r) > max_resp:
        r = r[:max_resp] if side == "right" else r[len(r) - max_resp :]
    if len(o) > max_resp:
        o = o[:max_resp] if side == "right" else o[len(o) - max_resp :]
    max_prompt = (budget - len(r) - len(o)) // 2
    if len(p) > max_prompt:
        p = p[len(p) - max_prompt :] if max_prompt > 0 else []
    P = tok.decode(p, skip_special_tokens=True)
    R = tok.decode(r, skip_special_tokens=True)
    O = tok.decode(o, skip_special_tokens=True)
    ref_cat = P + R if wrapper == "pretrain" or R == "" else P + "\n" + R
    out_cat = P + O if wrapper == "pretrain" or O == "" else P + "\n" + O
    text = ref_cat + "<|reward|>" + out_cat
    return text, tok.encode(text, add_special_tokens=True) + [tok.convert_tokens_to_ids(REWARD)]


LONG = "The quick brown fox jumps over the lazy dog. " * 40
CASES = {
    "strings": dict(prompt="What is the capital of China?", reference="Beijing.", output="Shanghai."),
    "multi_turn": dict(
        prompt=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Capital of China?"},
            {"role": "assistant", "content": "Beijing."},
            {"role": "user", "content": "And of France?"},
        ],
        reference=[{"role": "assistant", "content": "Paris."}],
        output=[{"role": "assistant", "content": "It is"}, {"role": "assistant", "content": "Paris."}],
    ),
    "empty_reference": dict(prompt="Say nothing.", reference="", output="OK"),
    "empty_output": dict(prompt="Say something.", reference="Something.", output=""),
    "pretrain": dict(prompt="Once upon a time", reference=" there was a king.", output=" a dog barked.", wrapper="pretrain"),
    "non_ascii": dict(prompt="中国的首都是哪里？", reference="北京。🙂", output="Ünïcödé: Pékin."),
    "special_text_in_prompt": dict(prompt="a <|reward|> b", reference="c", output="d"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_matches_training_construction(polar_path, polar_tokenizer, name):
    sample = CASES[name]
    client = RewardModelClient(polar_path)
    text, ids = reference_polar(polar_tokenizer, sample["prompt"], sample["reference"], sample["output"],
                                wrapper=sample.get("wrapper", "sft"))
    assert client.encode_ids(sample) == ids
    assert client.encode(sample) == text + REWARD
    # The text form, tokenized the way a server does (with BOS), gives the same ids.
    assert polar_tokenizer.encode(client.encode(sample)) == ids


def test_empty_reference_gets_no_newline(polar_path):
    text = RewardModelClient(polar_path).encode(CASES["empty_reference"])
    assert text == "Say nothing.<|reward|>Say nothing.\nOK" + REWARD


@pytest.mark.parametrize("side", ["right", "left"])
def test_response_truncation(polar_path, polar_tokenizer, side):
    sample = dict(prompt="Q?", reference=LONG, output="short " + LONG)
    client = RewardModelClient(polar_path, max_length=1024, max_response_length=50, response_cut_side=side)
    text, ids = reference_polar(polar_tokenizer, sample["prompt"], sample["reference"], sample["output"],
                                max_length=1024, max_resp=50, side=side)
    assert client.encode_ids(sample) == ids
    ref_half = client.encode(sample).split("<|reward|>")[0]
    # right keeps the head of the response, left its tail
    assert ("The quick" in ref_half.split("\n", 1)[1][:12]) == (side == "right")


def test_prompt_truncation_keeps_tail(polar_path, polar_tokenizer):
    sample = dict(prompt=LONG + "FINAL QUESTION?", reference="Yes.", output="No.")
    client = RewardModelClient(polar_path, max_length=120, max_response_length=40)
    text, ids = reference_polar(polar_tokenizer, sample["prompt"], sample["reference"], sample["output"],
                                max_length=120, max_resp=40)
    got = client.encode_ids(sample)
    assert got == ids and len(got) <= 120
    assert client.encode(sample).split("<|reward|>")[0].endswith("FINAL QUESTION?\nYes.")


def test_tiny_budget_keeps_no_prompt(polar_path):
    # Responses eat the whole budget: xtuner's client would keep the whole prompt (ids[-0:]).
    sample = dict(prompt=LONG, reference="r " * 30, output="o " * 30)
    client = RewardModelClient(polar_path, max_length=40, max_response_length=18)
    ids = client.encode_ids(sample)
    assert len(ids) <= 40
    assert "quick" not in client.encode(sample)


def test_never_over_max_length_even_when_responses_do_not_fit(polar_path):
    sample = dict(prompt="p " * 50, reference=LONG, output=LONG)
    for max_length in (8, 9, 16, 33, 64):
        client = RewardModelClient(polar_path, max_length=max_length, max_response_length=4096)
        ids = client.encode_ids(sample)
        assert len(ids) <= max_length
        assert ids[0] == 0 and ids[-1] == client.tokenizer.convert_tokens_to_ids(REWARD)


def test_batch_encoding_equals_one_by_one(polar_path):
    client = RewardModelClient(polar_path, max_length=200, max_response_length=60)
    samples = [CASES[k] for k in sorted(CASES)] + [dict(prompt=LONG, reference=LONG, output="x")]
    assert client.encode_ids(samples) == [client.encode_ids(s) for s in samples]


text_st = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\n"), max_size=300)
any_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=200) | st.sampled_from(
    ["", " ", "\n", "\n\n", "<|reward|>", "[UNUSED_TOKEN_130]", "<s>", "a\nb"]
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    prompt=text_st,
    reference=text_st.filter(bool),
    output=text_st.filter(bool),
    max_length=st.integers(min_value=8, max_value=300),
    max_resp=st.integers(min_value=1, max_value=200),
    side=st.sampled_from(["right", "left"]),
)
def test_properties(polar_tokenizer, prompt, reference, output, max_length, max_resp, side):
    recipe = PolarRecipe(polar_tokenizer, max_length=max_length, max_response_length=max_resp, response_cut_side=side)
    enc = recipe.encode([dict(prompt=prompt, reference=reference, output=output)])[0]
    reward_id = polar_tokenizer.convert_tokens_to_ids(REWARD)
    assert len(enc.ids) <= max_length
    assert enc.ids[-1] == reward_id and enc.ids.count(reward_id) == 1
    assert enc.ids[0] == polar_tokenizer.bos_token_id
    # No piece contains "\n", so each half is prompt [+ "\n" + piece]: the prompts must be identical.
    left, right = enc.text[: -len(REWARD)].split("<|reward|>")
    assert left.split("\n", 1)[0] == right.split("\n", 1)[0]
    text, ids = reference_polar(polar_tokenizer, prompt, reference, output,
                                max_length=max_length, max_resp=max_resp, side=side)
    if len(ids) <= max_length:  # the training construction fits: ours is exactly it
        assert enc.ids == ids and enc.text == text + REWARD


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    prompt=any_text,
    reference=any_text,
    output=any_text,
    wrapper=st.sampled_from(["sft", "pretrain"]),
    max_length=st.integers(min_value=8, max_value=400),
    max_resp=st.integers(min_value=0, max_value=150),
    side=st.sampled_from(["right", "left"]),
)
def test_fuzz_against_training_rule(polar_tokenizer, prompt, reference, output, wrapper, max_length, max_resp, side):
    """Any text (newlines, empty pieces, special-token strings): exact whenever the training rule fits."""
    recipe = PolarRecipe(polar_tokenizer, max_length=max_length, max_response_length=max_resp, response_cut_side=side)
    enc = recipe.encode([dict(prompt=prompt, reference=reference, output=output, wrapper=wrapper)])[0]
    assert len(enc.ids) <= max_length and enc.ids[0] == polar_tokenizer.bos_token_id
    assert enc.ids[-1] == polar_tokenizer.convert_tokens_to_ids(REWARD)
    assert polar_tokenizer.encode(enc.text) == enc.ids
    text, ids = reference_polar(polar_tokenizer, prompt, reference, output, wrapper=wrapper,
                                max_length=max_length, max_resp=max_resp, side=side)
    if len(ids) <= max_length:
        assert enc.ids == ids and enc.text == text + REWARD
