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
