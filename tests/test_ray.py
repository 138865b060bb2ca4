"""Ray Data (``rmclient.integrations.ray``) on a local cluster (``ray.init(num_cpus=2)``): rewards as a
column equal to the single-process client's, in order, in-process and against a server; the failure
policy (a failed row is NaN with its reason, or the batch fails), never a silent 0."""

from __future__ import annotations

import math
import os

import pytest

from rmclient import RewardModelClient
from tests.fake_engine import FakeEngine, reward_of

ray = pytest.importorskip("ray") if os.environ.get("CI") != "true" else __import__("ray")  # CI installs it

SAMPLES = [{"prompt": f"Question {i}: what is {i} + {i}?", "reference": str(2 * i), "output": str(2 * i + i % 3),
            "id": i} for i in range(40)]


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=256 * 2**20)
    ray.data.DataContext.get_current().execution_options.preserve_order = True
    try:
        yield ray
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def polar(tmp_path_factory):
    from rmclient.testing import build_polar_model

    return str(build_polar_model(tmp_path_factory.mktemp("ray") / "tiny-polar"))


def _scored(ds, **kwargs):
    from rmclient.integrations.ray import RewardScorer

    return ds.map_batches(RewardScorer, fn_constructor_kwargs=kwargs, concurrency=2, batch_size=8).take_all()


def test_in_process_rewards_equal_the_single_process_run(cluster, polar):
    rows = _scored(ray.data.from_items(SAMPLES), model=polar, batch_invariant=True)
    with RewardModelClient(polar, batch_invariant=True) as client:
        expected = client([{k: v for k, v in s.items() if k != "id"} for s in SAMPLES])
    assert [r["id"] for r in rows] == list(range(40))  # in input order, every other column kept
    assert [r["reward"] for r in rows] == pytest.approx(expected, abs=1e-6)


def test_a_server_and_the_failure_policy(cluster, polar):
    with FakeEngine("vllm", "0.32.0", poison=lambda ids: len(ids) > 0 and reward_of(ids) > 4.0) as fake:
        with RewardModelClient(polar, server_type="vllm", server_address=fake.url, max_attempts=1) as client:
            ids = client.encode_ids([{k: v for k, v in s.items() if k != "id"} for s in SAMPLES])
        bad = {i for i, x in enumerate(ids) if reward_of(x) > 4.0}
        assert 0 < len(bad) < len(SAMPLES)
        rows = _scored(ray.data.from_items(SAMPLES), model=polar, server_type="vllm", server_address=fake.url,
                       on_error="nan", max_attempts=1)
        for i, r in enumerate(rows):
            if i in bad:
                assert math.isnan(r["reward"]) and "400" in r["reward_error"], r
            else:
                assert r["reward"] == pytest.approx(reward_of(ids[i])) and r["reward_error"] is None
        with pytest.raises(Exception, match="could not be scored|samples failed"):
            _scored(ray.data.from_items(SAMPLES), model=polar, server_type="vllm", server_address=fake.url,
                    max_attempts=1)


def test_batches_as_pandas_and_nested_messages():
    import numpy as np
    import pandas as pd

    from rmclient.integrations.ray import batch_rows

    msgs = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    column = np.empty(2, dtype=object)
    column[0] = column[1] = msgs
    assert batch_rows({"messages": column, "k": np.array([1, 2])}) == [{"messages": msgs, "k": 1},
                                                                       {"messages": msgs, "k": 2}]
    assert batch_rows(pd.DataFrame({"prompt": ["a", "b"], "k": [1, 2]})) == [{"prompt": "a", "k": 1},
                                                                             {"prompt": "b", "k": 2}]


def test_rmclient_score_on_ray_writes_the_rewards_in_order(tmp_path, polar):
    import json

    from rmclient.cli import main

    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(s) + "\n" for s in SAMPLES))
    out = tmp_path / "out"
    assert main(["score", str(src), "-o", str(out), "--model", polar, "--ray", "local",
                 "--chunk-size", "16", "--reward-field", "score"]) == 0
    rows = [json.loads(x) for f in sorted(out.glob("*.json*")) for x in f.read_text().splitlines()]
    with RewardModelClient(polar, batch_invariant=True) as client:
        expected = client([{k: v for k, v in s.items() if k != "id"} for s in SAMPLES])
    assert sorted(r["id"] for r in rows) == list(range(40))
    by_id = {r["id"]: r["score"] for r in rows}
    assert [by_id[i] for i in range(40)] == pytest.approx(expected, abs=1e-6)
    assert main(["score", str(src), "-o", str(out), "--model", polar, "--ray", "local", "--kind", "vector"]) == 2
