"""rmclient behind a real ``vllm-router`` (PyPI 0.1.17, vllm-project/router, a Rust fork of sgl-router)
in front of two real CPU vLLM servers.

The router forwards the routes it does not know itself (``/pooling``, ``/tokenize``, ``/version``)
through a transparent proxy, from 0.1.11 (``src/server.rs``); that proxy neither retries nor
counts requests against a concurrency limit, so the client's own retries are what keep a sample
from being lost when a replica dies. Here: the rewards through the router equal each replica's
and the in-process model's, both replicas serve, and with one replica killed every sample still
gets its exact reward. (sglang-router and its successor smg have no such proxy: their native
``/classify`` is a 404, sglang#15240; the README gives the workaround, our pool over the replicas'
addresses.) Skipped without .venv-router and .venv-vllm, unless CI=true (then it fails).
"""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest

from rmclient import RewardModelClient
from rmclient.launchers import free_port, spawn, start

from .test_vllm_real import ENV, FLAGS, POLAR_SAMPLES, TOL, VLLM_PYTHON, _vllm_available

pytestmark = pytest.mark.vllm

REPO = Path(__file__).resolve().parents[1]
ROUTER = REPO / ".venv-router" / "bin" / "vllm-router"

if not (ROUTER.exists() and _vllm_available()):
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true but {ROUTER} or the vLLM environment is missing: run tests/run.sh", pytrace=False)
    pytest.skip(f"no vllm-router at {ROUTER} or no vLLM environment", allow_module_level=True)

SAMPLES = [dict(s, output=f"{s['output']} ({k})") for k in range(8) for s in POLAR_SAMPLES]  # 40 distinct


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    from rmclient.testing import build_polar_model

    root = tmp_path_factory.mktemp("router")
    model = str(build_polar_model(root / "tiny-polar"))
    workers, router = [], None
    try:
        for k in range(2):
            workers.append(start("vllm", model, python=str(VLLM_PYTHON), env=ENV, served_model_name="polar",
                                 wait=False, log_path=root / f"vllm-{k}.log", stop_grace=20, **FLAGS))
        for w in workers:
            w.wait_ready(timeout=300)
        port = free_port()
        router = spawn(
            [str(ROUTER), "--host", "127.0.0.1", "--port", str(port), "--policy", "round_robin",
             "--worker-urls", *[w.url for w in workers]],
            port=port, engine="vllm-router", ready_routes=("/health",), log_path=root / "router.log",
            ready_timeout=120, stop_grace=5,
        )
        yield model, workers, router
    finally:
        for server in [router, *workers]:
            if server is not None:
                server.stop()
                assert server.group_members() == []


def _pooling_requests(server) -> int:
    return server.log_path.read_text(errors="replace").count("POST /pooling")


def test_the_router_forwards_the_reward_routes(cluster):
    _, workers, router = cluster
    for route in ("/version", "/v1/models"):
        r = httpx.get(router.url + route, timeout=30)
        assert r.status_code == 200, (route, r.text)
    assert r.json()["data"][0]["max_model_len"] == FLAGS["max_model_len"]  # one worker's card, verbatim
    ids = [[1, 5, 6, 7]]
    r = httpx.post(router.url + "/pooling", json={"model": "polar", "input": ids, "encoding_format": "float"},
                   timeout=60)
    assert r.status_code == 200, r.text


def test_rewards_through_the_router_equal_each_replica_and_in_process(cluster):
    model, workers, router = cluster
    before = [_pooling_requests(w) for w in workers]
    with RewardModelClient(model, server_type="vllm", server_address=router.url, batch_size=4) as client:
        routed = client(SAMPLES)
    with RewardModelClient(model, server_type="vllm", server_address=workers[0].url) as direct:
        expected = direct(SAMPLES)
    local = RewardModelClient(model)(SAMPLES)
    assert routed == pytest.approx(expected, abs=1e-5)
    assert routed == pytest.approx(local, abs=TOL)
    served = [_pooling_requests(w) - b for w, b in zip(workers, before)]
    assert all(n >= 3 for n in served), served  # round robin: both replicas scored batches


def test_a_replica_dying_behind_the_router_loses_no_sample(cluster):
    model, workers, router = cluster
    local = RewardModelClient(model)(SAMPLES)
    workers[1].stop()
    with RewardModelClient(model, server_type="vllm", server_address=router.url, batch_size=4,
                           read_timeout=60) as client:
        routed = client(SAMPLES)
    assert routed == pytest.approx(local, abs=TOL)
    # the dead replica was sent requests (its failures opened the router's circuit breaker): they were retried
    assert "closed -> open" in router.log_path.read_text(errors="replace")
