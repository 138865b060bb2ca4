"""Bad input raises InvalidSampleError naming the sample index and the field."""

from __future__ import annotations

import pytest

from rmclient import ConfigurationError, InvalidSampleError, RewardModelClient

GOOD = {"prompt": "p", "reference": "r", "output": "o"}


@pytest.mark.parametrize(
    "bad, field",
    [
        ({"reference": "r", "output": "o"}, "prompt"),
        ({"prompt": "p", "reference": "r"}, "output"),
        ({"prompt": "p", "output": "o"}, "reference"),  # a POLAR model given no reference
        ({"prompt": 3, "reference": "r", "output": "o"}, "prompt"),
        ({"prompt": "p", "reference": ["r"], "output": "o"}, "reference[0]"),
        ({"prompt": [{"role": "user"}], "reference": "r", "output": "o"}, "prompt[0].content"),
        ({"prompt": [{"role": "user", "content": None}], "reference": "r", "output": "o"}, "prompt[0].content"),
        ({"prompt": "p", "reference": "r", "output": "o", "wrapper": "chat"}, "wrapper"),
        ("just a string", "<sample>"),
    ],
)
def test_polar_errors_name_index_and_field(polar_path, bad, field):
    client = RewardModelClient(polar_path)
    with pytest.raises(InvalidSampleError) as err:
        client.encode([GOOD, GOOD, bad])
    assert err.value.index == 2 and err.value.field == field
    assert f"sample 2, field {field!r}" in str(err.value)


@pytest.mark.parametrize(
    "bad, field",
    [
        ({"output": "o"}, "prompt"),
        ({"prompt": "p"}, "output"),
        ({"messages": "hi"}, "messages"),
        ({"messages": []}, "messages"),
        ({"messages": [{"content": "x"}]}, "messages[0].role"),
        ({"messages": [{"role": "user", "content": "q"}]}, "messages[0].role"),  # nothing to score
        ({"messages": [{"role": "user", "content": "q"}], "prompt": "p"}, "messages"),
        ({"prompt": "p", "output": "o", "reference": "r"}, "reference"),
    ],
)
def test_chat_errors_name_index_and_field(chat_path, bad, field):
    client = RewardModelClient(chat_path, recipe="chat_template")
    with pytest.raises(InvalidSampleError) as err:
        client([{"prompt": "p", "output": "o"}, bad])
    assert (err.value.index, err.value.field) == (1, field)


def test_data_with_reference_means_polar(chat_path):
    client = RewardModelClient(chat_path)  # not a POLAR model, but the data carries a reference
    with pytest.raises(InvalidSampleError) as err:
        client.encode([GOOD, {"prompt": "p", "output": "o"}])
    assert (err.value.index, err.value.field) == (1, "reference")


def test_configuration_errors(polar_path):
    with pytest.raises(ConfigurationError):
        RewardModelClient(polar_path, server_type="tgi")
    with pytest.raises(ConfigurationError):
        RewardModelClient(polar_path, recipe="nope").encode(GOOD)
    with pytest.raises(ConfigurationError):
        RewardModelClient(polar_path, response_cut_side="middle").encode(GOOD)


def test_request_bodies_are_compact_json_and_never_write_nan():
    """``jsonsafe.dumps`` (orjson where it can): the same JSON as ``json``, no NaN turned into null."""
    import json

    from rmclient import jsonsafe

    body = {"model": "m", "input": [[1, 2, 3], [92527]], "text": ["é 🙂", "\ud800 lone"], "temperature": 0.5}
    assert json.loads(jsonsafe.dumps(body)) == body  # a lone surrogate goes through json's escapes
    assert jsonsafe.dumps({"input": [[1, 2]]}) == b'{"input":[[1,2]]}'
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ValueError):
            jsonsafe.dumps({"temperature": bad})


def _depth(x) -> int:
    if isinstance(x, dict):
        x = list(x.values())
    return 1 + max(map(_depth, x), default=0) if isinstance(x, list) else 0


def test_json_nesting_is_measured_exactly_before_parsing():
    """``jsonsafe.too_deep`` against the real depth of random JSON whose strings hold brackets, quotes
    and backslashes; ``loads`` refuses past ``MAX_DEPTH`` before parsing (json would parse depth 201),
    and parses the rest as ``json``. A parse that recursed to the interpreter's limit left no stack
    to the finalizers a collection ran meanwhile: they failed unreported (a CI flake of test_faults'
    "deep" body)."""
    import json
    import random

    from rmclient import jsonsafe

    rng = random.Random(7)
    leaves = [1, 2.5, None, "", "x", "s[", "]", "[[", '"', 'q"\\]{', "\\", "\\\\", '\\"[', "{}", "é]"]

    def gen(d):
        if d == 0 or rng.random() < 0.2:
            return rng.choice(leaves)
        if rng.random() < 0.5:
            return [gen(d - 1) for _ in range(rng.randint(0, 3))]
        return {rng.choice(["k", "]", "", "{", '"['])+str(i): gen(d - 1) for i in range(rng.randint(0, 3))}

    for _ in range(2000):
        value = gen(rng.randint(1, 12))
        text = json.dumps(value, ensure_ascii=rng.random() < 0.5)
        for limit in (0, 1, 2, 3, 5, 8):
            assert jsonsafe.too_deep(text, limit) == (_depth(value) > limit), (text, limit)
        assert jsonsafe.loads(text.encode()) == value
    n = jsonsafe.MAX_DEPTH
    assert jsonsafe.loads("[" * n + "]" * n) is not None
    for deep in ("[" * (n + 1) + "]" * (n + 1), '{"a":[' * (n // 2 + 1) + "1" + "]}" * (n // 2 + 1),
                 "[" * 100_000 + "]" * 100_000, "[" * 100_000, '{"a": [' * 150):
        with pytest.raises(jsonsafe.JSONDepthError):  # json itself would parse the first two
            jsonsafe.loads(deep)
    assert jsonsafe.loads('["' + "[" * 5000 + '"]') == ["[" * 5000]  # brackets in a string are text
    with pytest.raises(ValueError, match="Expecting"):
        jsonsafe.loads('{"a": [1.')  # an ordinary error keeps json's message

