"""xtuner's own ``RewardModelClient`` scores through ``rmclient serve`` with its sglang code path.

xtuner 0.2.0 is installed ``--no-deps`` (``tests/run.sh``); its package
``__init__`` needs mmengine, so ``xtuner/utils/rm_utils.py`` is loaded by path.
Its client sends ``{"model": name, "text": [encode(sample), ...]}`` to
``http://ADDRESS/classify`` and reads ``[e["embedding"][0] for e in response]``;
the text ends with ``[UNUSED_TOKEN_130]`` and relies on the server adding BOS.

Its known defects (shared/ENGINES.md 1) are kept out of the comparison by the
choice of samples: every reference and output is non-empty (it inserts "\\n"
even for an empty piece), nothing is near a budget (it keeps the whole prompt
at a budget of 0 and cuts responses on the left), and only lists are sent (a
single dict cannot work on sglang). On these samples its encoding equals the
training rule, which the test checks before comparing rewards.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
from pathlib import Path

import pytest

from rmclient import RewardModelClient
from rmclient.serve import RewardServer, ServerThread

SAMPLES = [
    {"prompt": "What is the capital of China?", "reference": "Beijing.", "output": "Beijing."},
    {"prompt": "What is the capital of China?", "reference": "Beijing.", "output": "Shanghai."},
    {"prompt": "How many 'r's are in the word 'strawberry'?", "reference": "3.",
     "output": "There are three 'r's in the word 'strawberry'."},
    {"prompt": [{"role": "user", "content": "How many 'r's are in 'strawberry'?"}],
     "reference": [{"role": "assistant", "content": "3."}],
     "output": [{"role": "assistant", "content": "There are two 'r's in the word 'strawberry'."}]},
    {"prompt": "Write a poem " * 12, "reference": "Roses are red.", "output": "Violets are blue " * 5},
    {"prompt": "中国的首都是哪里？", "reference": "北京。", "output": "上海。"},
    {"prompt": "Continue: once upon", "reference": " a time", "output": " a mattress", "wrapper": "pretrain"},
]


def _load_xtuner_client():
    spec = importlib.util.find_spec("xtuner")  # does not run xtuner/__init__.py
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("xtuner is not installed (tests/run.sh installs xtuner==0.2.0 --no-deps)")
    path = Path(list(spec.submodule_search_locations)[0]) / "utils" / "rm_utils.py"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    pytest.importorskip("requests")
    module_spec = importlib.util.spec_from_file_location("xtuner_rm_utils", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.RewardModelClient


@pytest.fixture(scope="module")
def server(polar_path):
    with ServerThread(RewardServer(polar_path)) as s:
        yield s


def test_xtuner_client_scores_through_rmclient_serve(polar_path, server):
    XtunerClient = _load_xtuner_client()
    ours = RewardModelClient(polar_path)
    expected = ours(SAMPLES)

    # xtuner(path, max_length, max_response_length, response_cut_side, server_type, server_address)
    theirs = XtunerClient(polar_path, server_type="sglang", server_address=f"127.0.0.1:{server.port}")
    assert theirs.encode(SAMPLES) == ours.encode(SAMPLES)  # these samples encode as training does

    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):  # xtuner prints errors and returns None instead of raising
        rewards = theirs(SAMPLES)
        again = theirs.sglang_request_reward(ours.encode(SAMPLES))
    assert rewards is not None, printed.getvalue()
    assert rewards == pytest.approx(expected, abs=1e-5)
    assert again == pytest.approx(expected, abs=1e-5)
    assert printed.getvalue() == ""  # no retries, no truncation


def test_xtuner_and_our_client_agree_on_the_same_server(polar_path, server):
    XtunerClient = _load_xtuner_client()
    theirs = XtunerClient(polar_path, server_type="sglang", server_address=f"127.0.0.1:{server.port}")
    with RewardModelClient(polar_path, server_type="sglang", server_address=server.url) as remote:
        ours = remote(SAMPLES)
    with contextlib.redirect_stdout(io.StringIO()):
        assert theirs(SAMPLES) == pytest.approx(ours, abs=1e-5)
