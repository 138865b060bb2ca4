"""``rmclient serve`` under hostile input and misbehaving clients (loopback, bounded in time).

Hostile bodies get a 4xx naming what is wrong, never a 500, and the server serves on; one huge
request does not stall the small ones; a request whose client went away is not scored;
stalled connections are closed.
"""

from __future__ import annotations

import json
import socket
import threading
import time

import httpx
import pytest

from rmclient import RewardModelClient
from rmclient.serve import RewardServer, ServerThread

LONE = "a\\ud800b"  # a lone surrogate, written as a JSON escape
GOOD = {"prompt": "What is the capital of China?", "reference": "Beijing.", "output": "Beijing."}


@pytest.fixture(scope="module")
def server(polar_path):
    with ServerThread(RewardServer(polar_path, header_timeout=1.0, body_timeout=1.0)) as s:
        yield s


def _raw_post(server, path, raw: bytes, timeout=30):
    return httpx.post(server.url + path, content=raw, headers={"Content-Type": "application/json"}, timeout=timeout)


def _served(server, polar_path):
    """The server still answers correctly."""
    r = httpx.post(server.url + "/v1/rewards", json={"samples": [GOOD]}, timeout=30)
    assert r.status_code == 200, r.text
    assert r.json()["rewards"] == pytest.approx(RewardModelClient(polar_path)([GOOD]), abs=1e-5)


@pytest.mark.parametrize("path", ["/classify", "/get_reward", "/v1/rewards"])
def test_deeply_nested_json_is_a_400(server, polar_path, path):
    r = _raw_post(server, path, b"[" * 100_000 + b"]" * 100_000)
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_json", r.text
    assert "nested too deeply" in r.text
    r = _raw_post(server, path, b'{"samples": ' + b"[" * 50_000 + b"]" * 50_000 + b"}")
    assert r.status_code == 400
    _served(server, polar_path)


@pytest.mark.parametrize(
    "path, body, field, index",
    [
        ("/v1/rewards", '{"samples": [%s, {"prompt": "%s", "reference": "r", "output": "o"}]}' % (json.dumps(GOOD), LONE),
         "prompt", 1),
        ("/v1/rewards", '{"samples": [{"prompt": "p", "reference": "r", "output": [{"role": "assistant", "content": "%s"}]}]}'
         % LONE, "output[0].content", 0),
        ("/classify", '{"text": ["fine", "%s"]}' % LONE, "text", 1),
        ("/classify", '{"text": "%s"}' % LONE, "text", 0),
        ("/get_reward", '{"query": ["%s"]}' % LONE, "query", 0),
    ],
)
def test_text_that_cannot_be_encoded_is_a_400_naming_the_field(server, polar_path, path, body, field, index):
    r = _raw_post(server, path, body.encode())
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert (error["field"], error["index"]) == (field, index) and "lone surrogate" in error["message"]
    _served(server, polar_path)


def test_text_certainly_over_the_limit_is_refused_before_tokenizing(server):
    t0 = time.monotonic()
    r = httpx.post(server.url + "/classify", json={"text": ["x" * 5_000_000]}, timeout=30)
    assert r.status_code == 400 and "certainly more than" in r.json()["error"]["message"]
    assert time.monotonic() - t0 < 5


def test_small_requests_are_answered_while_huge_ones_are_tokenized(polar_path):
    with ServerThread(RewardServer(polar_path)) as srv:
        huge = {"samples": [{"prompt": "p q r s " * 400_000, "reference": "ref", "output": "out"}]}  # ~3.2 MB
        done = {}

        def big(k):
            r = httpx.post(srv.url + "/v1/rewards", json=huge, timeout=120)
            done[f"big{k}"] = (time.monotonic(), r.status_code)

        threads = [threading.Thread(target=big, args=(k,)) for k in range(3)]
        for t in threads:
            t.start()
        time.sleep(0.3)  # the huge ones are being parsed and tokenized
        small = []
        for _ in range(5):
            r = httpx.post(srv.url + "/v1/rewards", json={"samples": [GOOD]}, timeout=120)
            assert r.status_code == 200
            small.append(time.monotonic())
        for t in threads:
            t.join(timeout=120)
        assert all(code == 200 for _, code in done.values()), done
        first_big = min(at for at, _ in done.values())
        assert max(small) < first_big  # every small request was answered before any huge one


def test_a_request_whose_client_went_away_is_not_scored(polar_path):
    server = RewardServer(polar_path, max_batch_size=1)
    real = server.backend.score

    def slow(ids):
        time.sleep(0.3)
        return real(ids)

    server.batcher.score_fn = slow
    with ServerThread(server) as srv:
        host, port = srv.host, srv.port
        busy = threading.Thread(target=lambda: httpx.post(srv.url + "/v1/rewards", json={"samples": [GOOD]}, timeout=60))
        busy.start()
        time.sleep(0.1)
        body = json.dumps({"samples": [GOOD]}).encode()
        head = f"POST /v1/rewards HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        gone = []
        for _ in range(20):  # each client sends a whole request, which queues behind the busy model
            s = socket.create_connection((host, port))
            s.sendall(head.encode() + body)
            gone.append(s)
        time.sleep(0.5)
        for s in gone:  # ... then hangs up before it is scored
            s.close()
        time.sleep(0.2)
        t0 = time.monotonic()
        r = httpx.post(srv.url + "/v1/rewards", json={"samples": [GOOD]}, timeout=60)
        waited = time.monotonic() - t0
        busy.join(timeout=60)
        assert r.status_code == 200
        stats = server.stats()
        assert stats["abandoned_requests"] >= 15, stats
        assert stats["requests"] <= 2 + 20 - stats["abandoned_requests"]
        assert waited < 3.0, waited  # not 20 abandoned forward passes of 0.3 s ahead of it


def test_stalled_connections_are_closed_and_slow_bodies_get_408(server, polar_path):
    host, port = server.host, server.port
    stalled = []
    for _ in range(50):
        s = socket.create_connection((host, port))
        s.sendall(b"POST /v1/rewards HTTP/1.1\r\nHost: x\r\n")  # a head that never ends
        s.settimeout(5)
        stalled.append(s)
    slow = socket.create_connection((host, port))
    slow.sendall(b"POST /v1/rewards HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
    slow.settimeout(10)
    time.sleep(2.5)
    closed = 0
    for s in stalled:
        try:
            closed += s.recv(1024) == b""
        except (ConnectionResetError, socket.timeout):
            closed += 0
        finally:
            s.close()
    assert closed == 50
    answer = slow.recv(4096).decode()
    slow.close()
    assert answer.startswith("HTTP/1.1 408"), answer[:200]
    _served(server, polar_path)
