"""``rmclient serve``: every route gives the in-process rewards; batching, limits, auth, launch.

The servers run in-process (``ServerThread``, a free loopback port, tiny models);
only the launch test starts a real ``python -m rmclient.serve`` process.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import threading

import httpx
import pytest

from rmclient import RewardModelClient
from rmclient.batcher import DynamicBatcher
from rmclient.errors import ConfigurationError
from rmclient.serve import RewardServer, ServerThread, add_serve_arguments, is_loopback, run_serve

POLAR = [
    {"prompt": "What is the capital of China?", "reference": "Beijing.", "output": "Beijing."},
    {"prompt": "What is the capital of China?", "reference": "Beijing.", "output": "Shanghai."},
    {"prompt": "Write a poem " * 12, "reference": "Roses are red.", "output": "Violets are blue " * 5},
    {"prompt": [{"role": "user", "content": "2+2?"}], "reference": [{"role": "assistant", "content": "4"}],
     "output": [{"role": "assistant", "content": "four"}]},
    {"prompt": "中国的首都是哪里？", "reference": "北京。", "output": ""},
    {"prompt": "x", "reference": "", "output": "y", "wrapper": "pretrain"},
]
CHAT = [
    {"prompt": "2+2?", "output": "4"},
    {"prompt": [{"role": "user", "content": "Name a colour."}], "output": "Blue, obviously."},
    {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello there!"},
                  {"role": "user", "content": "Bye"}, {"role": "assistant", "content": "Goodbye."}]},
]
ABS = 1e-5
KEY = "s3cret-key"
MAX_SAMPLES = 40
MAX_BODY = 64 * 1024


def polar_sample(i: int) -> dict:
    """A distinct sample per client, of varying length."""
    return {
        "prompt": f"Question {i}: what is {i} plus {i * 7 % 13}?" + " Think." * (i % 5),
        "reference": f"{i + i * 7 % 13}",
        "output": f"The answer is {i * 3}." + " Really." * (i % 4),
    }


@pytest.fixture(scope="module")
def polar_client(polar_path):
    return RewardModelClient(polar_path)


@pytest.fixture(scope="module")
def chat_client(chat_path):
    return RewardModelClient(chat_path)


@pytest.fixture(scope="module")
def polar_server(polar_path):
    with ServerThread(RewardServer(polar_path, max_samples=MAX_SAMPLES, max_body_bytes=MAX_BODY)) as s:
        yield s


@pytest.fixture(scope="module")
def chat_server(chat_path):
    with ServerThread(RewardServer(chat_path, served_model_name="tiny-chat")) as s:
        yield s


@pytest.fixture(scope="module")
def keyed_server(polar_path):
    with ServerThread(RewardServer(polar_path, api_key=KEY)) as s:
        yield s


def post(server, path, body=None, **kw):
    if body is not None:
        kw["json"] = body
    return httpx.post(server.url + path, timeout=30, **kw)


def assert_serves(server, client, samples=POLAR[:2]):
    """The server still answers a good request correctly."""
    r = post(server, "/classify", {"input_ids": client.encode_ids(samples)})
    assert r.status_code == 200, r.text
    assert [x["embedding"][0] for x in r.json()] == pytest.approx(client(samples), abs=ABS)


# -- rewards through every route equal in-process ---------------------------------------


@pytest.mark.parametrize("which", ["polar", "chat"])
def test_classify_ids_and_text_equal_in_process(request, which):
    server = request.getfixturevalue(f"{which}_server")
    client = request.getfixturevalue(f"{which}_client")
    samples = POLAR if which == "polar" else CHAT
    expected = client(samples)
    ids = client.encode_ids(samples)

    r = post(server, "/classify", {"input_ids": ids, "model": "ignored"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert isinstance(body, list) and len(body) == len(samples)
    assert [x["embedding"][0] for x in body] == pytest.approx(expected, abs=ABS)
    assert [x["meta_info"]["prompt_tokens"] for x in body] == [len(x) for x in ids]

    # text: the server adds BOS (as sglang does); the text form ends with the reward token
    r = post(server, "/classify", {"text": client.encode(samples)})
    assert r.status_code == 200, r.text
    assert [x["meta_info"]["prompt_tokens"] for x in r.json()] == [len(x) for x in ids]
    assert [x["embedding"][0] for x in r.json()] == pytest.approx(expected, abs=ABS)

    # a single input answers one dict
    one = post(server, "/classify", {"text": client.encode(samples[1])}).json()
    assert isinstance(one, dict) and one["embedding"][0] == pytest.approx(expected[1], abs=ABS)
    one = post(server, "/classify", {"input_ids": ids[0]}).json()
    assert isinstance(one, dict) and one["embedding"][0] == pytest.approx(expected[0], abs=ABS)


@pytest.mark.parametrize("which", ["polar", "chat"])
def test_get_reward_takes_whole_text_without_adding_special_tokens(request, which):
    server = request.getfixturevalue(f"{which}_server")
    client = request.getfixturevalue(f"{which}_client")
    samples = POLAR if which == "polar" else CHAT
    ids = client.encode_ids(samples)
    queries = [client.tokenizer.decode(x, skip_special_tokens=False) for x in ids]
    assert all(q.startswith(client.tokenizer.bos_token) for q in queries)  # BOS is in the text
    r = post(server, "/get_reward", {"query": queries, "prompts": ["ignored"] * len(queries)})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["rewards"] == pytest.approx(client(samples), abs=ABS)
    assert body["scores"] == body["rewards"]


@pytest.mark.parametrize("which", ["polar", "chat"])
def test_native_route_encodes_raw_samples_like_the_client(request, which):
    server = request.getfixturevalue(f"{which}_server")
    client = request.getfixturevalue(f"{which}_client")
    samples = POLAR if which == "polar" else CHAT
    r = post(server, "/v1/rewards", {"samples": samples, "return_encodings": True})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["rewards"] == pytest.approx(client(samples), abs=ABS)
    assert [e["input_ids"] for e in body["encodings"]] == client.encode_ids(samples)
    assert [e["text"] for e in body["encodings"]] == client.encode(samples)
    assert body["num_tokens"] == [len(x) for x in client.encode_ids(samples)]
    one = post(server, "/v1/rewards", {"samples": samples[0]}).json()  # one dict is one sample
    assert one["rewards"] == pytest.approx([client(samples[0])], abs=ABS)


def test_native_route_recipe_is_fixed_at_startup_not_chosen_from_the_data(chat_path, chat_server, polar_server):
    assert chat_server.server.recipe == "chat_template" and polar_server.server.recipe == "polar"
    samples = [dict(s, reference="Beijing.") for s in CHAT[:2]]
    # a client's 'reference' no longer switches a chat RM to POLAR encoding: the chat recipe refuses it
    r = post(chat_server, "/v1/rewards", {"samples": samples, "return_encodings": True})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["field"] == "reference" and r.json()["error"]["index"] == 0
    r = post(chat_server, "/v1/rewards", {"samples": CHAT[:2], "return_encodings": True})
    assert r.status_code == 200, r.text
    chat = RewardModelClient(chat_path, recipe="chat_template")
    assert [e["input_ids"] for e in r.json()["encodings"]] == chat.encode_ids(CHAT[:2])


def test_a_server_backed_client_is_refused(polar_path):
    remote = RewardModelClient(polar_path, server_type="sglang", server_address="127.0.0.1:9")
    with pytest.raises(ConfigurationError, match="in-process"):
        RewardServer(polar_path, client=remote)


def test_a_given_client_gets_the_servers_fixed_recipe(chat_path):
    client = RewardModelClient(chat_path)
    server = RewardServer(chat_path, client=client)
    assert server.recipe == client.recipe == "chat_template"
    with pytest.raises(ConfigurationError, match="recipe"):
        RewardServer(chat_path, client=RewardModelClient(chat_path, recipe="polar"), recipe="chat_template")


def test_a_non_finite_reward_is_a_500_for_that_request_only(chat_path, chat_client, monkeypatch):
    server = RewardServer(chat_path)
    forward = server.backend._forward

    def poisoned(seqs, output="reward"):  # the model gives NaN for sequences that start with token 13
        return [float("nan") if s[0] == 13 else r for s, r in zip(seqs, forward(seqs, output))]

    monkeypatch.setattr(server.backend, "_forward", poisoned)
    with ServerThread(server) as s:
        r = post(s, "/classify", {"input_ids": [[5, 6, 7], [13, 6, 7]]})
        assert r.status_code == 500, r.text
        assert r.json()["error"]["type"] == "model_error" and "sample(s) 1 (nan)" in r.json()["error"]["message"]
        good = post(s, "/classify", {"input_ids": [[5, 6, 7]]})
        assert good.status_code == 200
        assert good.json()[0]["embedding"][0] == pytest.approx(chat_client.score_ids([[5, 6, 7]])[0], abs=ABS)


def test_a_big_request_is_split_into_forward_passes(chat_server, chat_client):
    seqs = [[7 + i % 50] * (300 + i % 7) for i in range(250)]  # ~0.3 MB of ids: checked off the event loop
    r = post(chat_server, "/classify", {"input_ids": seqs})
    assert r.status_code == 200, r.text
    assert [x["embedding"][0] for x in r.json()] == pytest.approx(chat_client.score_ids(seqs), abs=ABS)


def test_our_sglang_client_works_against_the_server(polar_path, polar_server, polar_client):
    expected = polar_client(POLAR)
    with RewardModelClient(polar_path, server_type="sglang", server_address=polar_server.url) as remote:
        assert remote(POLAR) == pytest.approx(expected, abs=ABS)
        assert remote(POLAR[2]) == pytest.approx(expected[2], abs=ABS)
        assert remote.sglang_request_reward(remote.encode(POLAR)) == pytest.approx(expected, abs=ABS)  # text form
        # learnt from /server_info's max_req_input_len (sglang's form: the longest input + 1): the same
        # limit as in-process, so the same ids on every path
        assert remote.effective_max_length() == 4096 == polar_client.effective_max_length()


def test_models_and_info_routes(chat_server):
    models = httpx.get(chat_server.url + "/v1/models").json()
    assert models["object"] == "list"
    assert models["data"][0]["id"] == "tiny-chat"
    assert models["data"][0]["max_model_len"] == 4096  # the config's max_position_embeddings
    health = httpx.get(chat_server.url + "/health").json()
    assert health["status"] == "ok" and "batches" in health and "merged_batches" in health
    info = httpx.get(chat_server.url + "/get_server_info").json()
    assert "version" not in info  # no engine version: clients use their "unknown version" row
    assert httpx.get(chat_server.url + "/get_model_info").json()["is_generation"] is False


# -- concurrency ----------------------------------------------------------------------------


def test_32_concurrent_clients_each_get_their_own_reward(polar_server, polar_client):
    n = 32
    samples = [polar_sample(i) for i in range(n)]
    expected = polar_client(samples)
    ids = polar_client.encode_ids(samples)
    assert len({round(e, 3) for e in expected}) > n // 2  # the rewards tell the clients apart
    before = httpx.get(polar_server.url + "/stats").json()
    barrier = threading.Barrier(n)
    got: dict = {}
    errors: list = []

    def one_client(i: int) -> None:
        try:
            with httpx.Client(base_url=polar_server.url, timeout=60) as http:
                barrier.wait()
                for route in ("/v1/rewards", "/classify"):  # two rounds: raw samples, then ids
                    if route == "/v1/rewards":
                        r = http.post(route, json={"samples": [samples[i]]})
                        reward = r.json()["rewards"][0]
                    else:
                        r = http.post(route, json={"input_ids": ids[i]})
                        reward = r.json()["embedding"][0]
                    got[(i, route)] = reward
        except Exception as exc:  # noqa: BLE001
            errors.append((i, exc))

    threads = [threading.Thread(target=one_client, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    for i in range(n):
        for route in ("/v1/rewards", "/classify"):
            assert got[(i, route)] == pytest.approx(expected[i], abs=ABS), (i, route)
    after = httpx.get(polar_server.url + "/stats").json()
    assert after["requests"] - before["requests"] == 2 * n
    assert after["merged_batches"] > before["merged_batches"]  # forward passes were shared
    assert after["max_requests_per_batch"] > 1
    assert after["batches"] - before["batches"] < 2 * n


def test_asyncio_clients_through_our_async_client(polar_path, polar_server, polar_client):
    from rmclient import AsyncRewardModelClient

    samples = [polar_sample(i) for i in range(32, 64)]
    expected = polar_client(samples)

    async def run():
        async with AsyncRewardModelClient(polar_path, server_type="sglang", server_address=polar_server.url,
                                          batch_size=1) as client:
            return await asyncio.gather(*(client(s) for s in samples))

    assert list(asyncio.run(run())) == pytest.approx(expected, abs=ABS)


def test_batcher_routes_results_and_respects_the_budget():
    seen = []

    def score(ids):
        seen.append([len(x) for x in ids])
        return [float(sum(x) + len(x)) for x in ids]

    async def run():
        batcher = DynamicBatcher(score, max_tokens=64, max_batch_size=8, max_wait=0.02)
        reqs = [[[i, j] * (1 + (i + j) % 5) for j in range(1 + i % 3)] for i in range(40)]
        reqs.append([[1] * 100])  # over the budget alone: runs in a batch of its own
        out = await asyncio.gather(*(batcher.score(r) for r in reqs))
        await batcher.close()
        return reqs, out, batcher.stats

    reqs, out, stats = asyncio.run(run())
    for r, o in zip(reqs, out):
        assert o == [float(sum(x) + len(x)) for x in r]
    for lengths in seen:
        if lengths != [100]:
            assert len(lengths) <= 8 and len(lengths) * max(lengths) <= 64
    assert stats.merged_batches > 0 and stats.requests == len(reqs)


def test_merged_batches_are_cut_by_padding_in_the_backend(chat_server, chat_client):
    server = chat_server.server
    assert server.batcher.score_fn == server.backend.score  # no second batch planner in the server
    assert server.backend.max_padding is None and server.backend._padding_limit() == 0.0  # CPU default
    seqs = [[7] * 200, [8] * 12, [9] * 11, [10] * 10]
    before = httpx.get(chat_server.url + "/stats").json()["forward_passes"]
    r = post(chat_server, "/classify", {"input_ids": seqs})
    assert r.status_code == 200, r.text
    assert [x["embedding"][0] for x in r.json()] == pytest.approx(chat_client.score_ids(seqs), abs=ABS)
    assert httpx.get(chat_server.url + "/stats").json()["forward_passes"] - before == 4  # no padding on CPU


def test_batcher_survives_an_unexpected_error_in_its_collector():
    calls = []

    def score(ids):
        calls.append(len(ids))
        if len(calls) == 1:
            return None  # not a list: _run itself breaks, outside the per-request isolation
        return [float(x[0]) for x in ids]

    async def run():
        batcher = DynamicBatcher(score, max_wait=0.0)
        first = await asyncio.wait_for(asyncio.gather(batcher.score([[1]]), return_exceptions=True), 5)
        later = await asyncio.wait_for(asyncio.gather(batcher.score([[2]]), batcher.score([[3]])), 5)
        await batcher.close()
        return first[0], later

    first, later = asyncio.run(run())
    assert isinstance(first, TypeError)
    assert later == [[2.0], [3.0]]


def test_close_fails_the_requests_of_a_running_batch():
    release = threading.Event()

    def score(ids):
        release.wait(5)
        return [0.0] * len(ids)

    async def run():
        batcher = DynamicBatcher(score, max_wait=0.0)
        task = asyncio.ensure_future(batcher.score([[1]]))
        await asyncio.sleep(0.1)  # the batch is in the model thread
        await batcher.close()
        release.set()
        return await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), 5)

    (out,) = asyncio.run(run())
    from rmclient.batcher import BatcherClosed

    assert isinstance(out, BatcherClosed)


def test_batcher_isolates_a_failing_request():
    def score(ids):
        if any(x[0] < 0 for x in ids):
            raise ValueError("poison")
        return [float(x[0]) for x in ids]

    async def run():
        batcher = DynamicBatcher(score, max_wait=0.05)
        out = await asyncio.gather(*(batcher.score([[i]]) for i in (1, 2, -1, 3)), return_exceptions=True)
        await batcher.close()
        return out, batcher.stats

    out, stats = asyncio.run(run())
    assert out[0] == [1.0] and out[1] == [2.0] and out[3] == [3.0]
    assert isinstance(out[2], ValueError)
    assert stats.merged_batches >= 1 and stats.failed_requests == 1


# -- bad input, limits, auth: the right status, and the server keeps serving -------------------


@pytest.mark.parametrize(
    "path, kwargs, status, index, field",
    [
        ("/classify", {"content": b'{"text": ["a", '}, 400, None, None),  # malformed JSON
        ("/v1/rewards", {"content": b"\xff\xfe not json"}, 400, None, None),
        ("/get_reward", {"json": ["a list", "not an object"]}, 400, None, None),
        ("/classify", {"content": b'{"text": "' + b"x" * (MAX_BODY + 10) + b'"}'}, 413, None, None),  # oversize
        ("/classify", {"json": {"model": "m"}}, 400, None, "text"),  # neither text nor input_ids
        ("/classify", {"json": {"text": ["a"], "input_ids": [[1]]}}, 400, None, "text"),  # both
        ("/classify", {"json": {"text": ["ok", 7]}}, 400, 1, "text"),
        ("/classify", {"json": {"input_ids": [[5, 6], []]}}, 400, 1, "input_ids"),
        ("/classify", {"json": {"input_ids": [[5, 6], [5, 10**9]]}}, 400, 1, "input_ids"),  # outside the vocab
        ("/classify", {"json": {"input_ids": [[5, "6"]]}}, 400, 0, "input_ids"),
        ("/classify", {"json": {"input_ids": [[5] * 4097]}}, 400, 0, "input_ids"),  # over max_model_len
        ("/classify", {"json": {"input_ids": [[5, 6]] * (MAX_SAMPLES + 1)}}, 413, None, None),  # too many samples
        ("/get_reward", {"json": {"queries": ["typo"]}}, 400, None, "query"),
        ("/get_reward", {"json": {"query": ["fine", ""]}}, 400, 1, "query"),
        ("/v1/rewards", {"json": {"sample": POLAR[0]}}, 400, None, "samples"),
        ("/v1/rewards", {"json": {"samples": [POLAR[0], {"prompt": "p", "output": "o"}]}}, 400, 1, "reference"),
        ("/v1/rewards", {"json": {"samples": [POLAR[0], {"prompt": 3, "reference": "r", "output": "o"}]}},
         400, 1, "prompt"),
        ("/v1/rewards", {"json": {"samples": [POLAR[0], "text"]}}, 400, 1, "<sample>"),
        ("/v1/rewards", {"json": {"samples": [POLAR[0]] * (MAX_SAMPLES + 1)}}, 413, None, None),
        ("/v1/rewards", {"json": {"samples": []}}, 400, None, None),
        ("/nowhere", {"json": {}}, 404, None, None),
    ],
)
def test_bad_requests_get_the_right_status_and_the_server_serves_on(
    polar_server, polar_client, path, kwargs, status, index, field
):
    r = post(polar_server, path, **kwargs)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["code"] == status and err["message"]
    if index is not None:
        assert err["index"] == index and str(index) in err["message"]
    if field is not None:
        assert err["field"] == field
    assert_serves(polar_server, polar_client)


def test_oversize_body_is_refused_before_it_is_read(polar_server, polar_client):
    big = json.dumps({"input_ids": [[5] * 100] * 2000}).encode()  # ~1.2 MB against a 64 KiB limit
    r = post(polar_server, "/classify", content=big, headers={"Content-Type": "application/json"})
    assert r.status_code == 413
    assert "limit" in r.json()["error"]["message"]
    assert_serves(polar_server, polar_client)


def test_a_bad_request_among_concurrent_good_ones_fails_alone(polar_server, polar_client):
    samples = [polar_sample(i) for i in range(12)]
    expected = polar_client(samples)
    bad = {"prompt": "p", "output": "o"}  # no reference

    async def run():
        async with httpx.AsyncClient(base_url=polar_server.url, timeout=60) as http:
            reqs = [http.post("/v1/rewards", json={"samples": [s]}) for s in samples]
            reqs.insert(5, http.post("/v1/rewards", json={"samples": [bad]}))
            return await asyncio.gather(*reqs)

    responses = list(asyncio.run(run()))
    bad_response = responses.pop(5)
    assert bad_response.status_code == 400 and bad_response.json()["error"]["field"] == "reference"
    assert [r.json()["rewards"][0] for r in responses] == pytest.approx(expected, abs=ABS)


def test_api_key(keyed_server, polar_client, polar_path):
    ids = polar_client.encode_ids(POLAR[:2])
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}, {"Authorization": "Basic " + KEY}):
        r = post(keyed_server, "/classify", {"input_ids": ids}, headers=headers)
        assert r.status_code == 401, headers
        assert r.json()["error"]["type"] == "unauthorized"
        assert httpx.get(keyed_server.url + "/v1/models", headers=headers).status_code == 401
    assert httpx.get(keyed_server.url + "/health").status_code == 200  # liveness needs no key
    r = post(keyed_server, "/classify", {"input_ids": ids}, headers={"Authorization": f"Bearer {KEY}"})
    assert r.status_code == 200
    assert [x["embedding"][0] for x in r.json()] == pytest.approx(polar_client(POLAR[:2]), abs=ABS)
    with RewardModelClient(polar_path, server_type="sglang", server_address=keyed_server.url, api_key=KEY) as c:
        assert c(POLAR) == pytest.approx(polar_client(POLAR), abs=ABS)


def _serve_args(*argv):
    return add_serve_arguments(argparse.ArgumentParser()).parse_args(list(argv))


@pytest.fixture
def keep_log_levels():
    import logging

    names = ("rmclient", "aiohttp.access")
    levels = {n: logging.getLogger(n).level for n in names}
    yield
    for n, level in levels.items():
        logging.getLogger(n).setLevel(level)


def test_non_loopback_bind_needs_an_api_key(polar_path, monkeypatch, caplog, keep_log_levels):
    monkeypatch.delenv("RMCLIENT_API_KEY", raising=False)
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1") and is_loopback("127.1.2.3")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.0.0.5") and not is_loopback("::")
    assert run_serve(_serve_args(polar_path, "--host", "0.0.0.0", "--port", "0")) == 2  # refused, nothing bound
    assert "API key" in caplog.text and "--insecure" in caplog.text
    defaults = _serve_args(polar_path)
    assert defaults.host == "127.0.0.1" and defaults.max_wait_ms == 5.0


def test_only_python_m_serve_configures_root_logging(polar_path, monkeypatch, keep_log_levels):
    import logging

    from rmclient import serve

    monkeypatch.delenv("RMCLIENT_API_KEY", raising=False)
    monkeypatch.setattr(logging.getLogger(), "handlers", [])  # as in a fresh process
    configured = []
    monkeypatch.setattr(logging, "basicConfig", lambda **kw: configured.append(kw))
    argv = [polar_path, "--host", "0.0.0.0", "--port", "0", "--log-level", "debug"]  # refused: returns at once
    assert run_serve(_serve_args(*argv)) == 2  # `rmclient serve`: rmclient.cli.main set logging up already
    assert configured == [] and logging.getLogger("rmclient").level == logging.DEBUG
    assert serve.main(argv) == 2  # `python -m rmclient.serve`: its own entry point sets it up
    assert len(configured) == 1


# -- launch through the supervisor ----------------------------------------------------------


def test_launch_transformers_through_the_supervisor(polar_path, polar_client):
    from rmclient.launchers import build_launch_command, launch

    cmd = build_launch_command("transformers", polar_path, port=1234, api_key=KEY, dry_run=True)
    assert cmd[1:5] == ["-m", "rmclient.serve", polar_path, "--host"]
    assert KEY not in " ".join(cmd)  # the key travels in RMCLIENT_API_KEY: argv is readable by anyone (`ps`)
    with launch("transformers", polar_path, api_key=KEY, ready_timeout=120) as server:
        assert server.url.startswith("http://127.0.0.1:")
        with RewardModelClient(polar_path, server_type="sglang", server_address=server.url, api_key=KEY) as c:
            assert c(POLAR) == pytest.approx(polar_client(POLAR), abs=ABS)
        assert httpx.post(server.url + "/classify", json={"text": "x"}).status_code == 401
        pgid = server.pgid
        assert KEY not in " ".join(server.command)
    assert server.process.poll() is not None
    assert server.group_members() == []
    from rmclient.launchers.supervisor import _group_members

    assert _group_members(pgid) == []


@pytest.mark.parametrize("which", ["polar", "chat"])
def test_our_openrlhf_client_works_against_get_reward(request, which):
    """server_type="openrlhf" sends each sample's whole text (BOS included) to /get_reward."""
    server = request.getfixturevalue(f"{which}_server")
    local = request.getfixturevalue(f"{which}_client")
    samples = POLAR[:4] if which == "polar" else [{"prompt": "q", "output": o} for o in ("a", "bb", "ccc")]
    remote = RewardModelClient(local.path, server_type="openrlhf", server_address=server.url)
    assert remote(samples) == pytest.approx(local(samples), abs=1e-5)


def test_metrics_are_prometheus_text_and_the_json_moved_to_stats(polar_server, polar_client):
    from prometheus_client.parser import text_string_to_metric_families

    def scrape():
        r = httpx.get(polar_server.url + "/metrics", timeout=10)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(r.text) for s in family.samples}

    before = scrape()  # the server is shared with other tests: compare deltas
    tokens = 0
    for _ in range(3):
        r = post(polar_server, "/v1/rewards", {"samples": POLAR[:2]})
        assert r.status_code == 200
        tokens += sum(r.json()["num_tokens"])
    assert post(polar_server, "/v1/rewards", {"samples": "nope"}).status_code == 400
    after = scrape()

    def delta(name, **labels):
        key = (name, tuple(sorted(labels.items())))
        return after[key] - before.get(key, 0.0)

    assert delta("rmclient_requests_total", route="/v1/rewards", status="200") == 3
    assert delta("rmclient_requests_total", route="/v1/rewards", status="400") == 1
    assert delta("rmclient_samples_total", route="/v1/rewards") == 6
    assert delta("rmclient_request_seconds_count", route="/v1/rewards") == 4
    assert 1 <= delta("rmclient_batch_sequences_count") <= 3 and delta("rmclient_batch_sequences_sum") == 6
    assert delta("rmclient_tokens_total") == tokens
    assert after[("rmclient_queued_requests", ())] == 0  # idle
    stats = httpx.get(polar_server.url + "/stats", timeout=10).json()
    assert stats["tokens"] == after[("rmclient_tokens_total", ())] and stats["batches"] == after[("rmclient_batches_total", ())]
