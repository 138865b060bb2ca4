"""Rewards from the in-process backend equal a direct forward pass on the same ids."""

from __future__ import annotations

import pytest
import torch

from rmclient import RewardModelClient
from rmclient.local import TransformersBackend, plan_batches

SAMPLES = [
    {"prompt": "What is the capital of China?", "reference": "Beijing.", "output": "Beijing."},
    {"prompt": "What is the capital of China?", "reference": "Beijing.", "output": "Shanghai."},
    {"prompt": "Write a poem " * 12, "reference": "Roses are red.", "output": "Violets are blue " * 5},
    {"prompt": "中国的首都是哪里？", "reference": "北京。", "output": ""},
    {"prompt": "x", "reference": "", "output": "y", "wrapper": "pretrain"},
]


def direct_rewards(path, ids):
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(path, dtype=torch.float32).eval()
    with torch.no_grad():
        return [model(input_ids=torch.tensor([x])).logits[0, 0].item() for x in ids]


def test_rewards_equal_direct_forward(polar_path):
    client = RewardModelClient(polar_path)
    ids = client.encode_ids(SAMPLES)
    expected = direct_rewards(polar_path, ids)
    got = client(SAMPLES)
    assert got == pytest.approx(expected, abs=1e-5)
    assert len(set(round(r, 4) for r in got)) == len(got)  # the tiny model tells the samples apart
    assert client(SAMPLES[1]) == pytest.approx(expected[1], abs=1e-5)
    assert isinstance(client(SAMPLES[1]), float)


@pytest.mark.parametrize("padding_side", ["right", "left"])
@pytest.mark.parametrize("batch_size, max_tokens", [(1, 10_000), (2, 10_000), (32, 10_000), (32, 120)])
def test_batched_equals_single(polar_path, padding_side, batch_size, max_tokens):
    client = RewardModelClient(polar_path)
    ids = client.encode_ids(SAMPLES)
    single = [client.score_ids([x])[0] for x in ids]  # one by one: no padding at all
    backend = TransformersBackend(polar_path, client.config, batch_size=batch_size, max_tokens=max_tokens,
                                  padding_side=padding_side, pad_token_id=client.tokenizer.pad_token_id)
    assert backend.score(ids) == pytest.approx(single, abs=1e-4)


def test_pad_token_inside_a_sample_does_not_move_the_score(polar_path):
    # A sequence that ends with the pad id: transformers' own pooling would look elsewhere.
    client = RewardModelClient(polar_path)
    pad = client.tokenizer.pad_token_id
    ids = [[0, 50, 60, pad], [0, 70, 80, 90, 100, 110]]
    expected = direct_rewards_last(polar_path, ids)
    assert client.score_ids(ids) == pytest.approx(expected, abs=1e-5)


def direct_rewards_last(path, ids):
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(path, dtype=torch.float32).eval()
    out = []
    with torch.no_grad():
        for x in ids:
            hidden = model.model(input_ids=torch.tensor([x])).last_hidden_state
            out.append(model.score(hidden)[0, -1, 0].item())
    return out


def test_chat_rm_rewards(chat_path):
    client = RewardModelClient(chat_path)
    samples = [{"prompt": "hi", "output": "hello"}, {"prompt": "hi", "output": "go away"}]
    assert client(samples) == pytest.approx(direct_rewards(chat_path, client.encode_ids(samples)), abs=1e-5)


def test_model_loads_lazily(polar_path):
    client = RewardModelClient(polar_path)
    client.encode(SAMPLES)
    assert client._local is None


def test_plan_batches():
    lengths = [5, 100, 7, 50, 6]
    batches = plan_batches(lengths, max_tokens=120, batch_size=3)
    assert sorted(i for b in batches for i in b) == list(range(5))
    assert batches[0] == [1]  # 100 tokens: 2 rows would be 200 > 120
    for b in batches:
        assert len(b) <= 3 and (len(b) == 1 or len(b) * max(lengths[i] for i in b) <= 120)


def test_plan_batches_cuts_by_padding():
    lengths = [100, 12, 95, 50, 11, 98, 49, 10, 200]
    batches = plan_batches(lengths, 10**9, 100, max_padding=0.1)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for b in batches:
        width = max(lengths[i] for i in b)
        assert len(b) * width - sum(lengths[i] for i in b) <= 0.1 * len(b) * width
    assert [sorted(b) for b in batches] == [[8], [0, 2, 5], [3, 6], [1, 4, 7]]
    assert plan_batches(lengths, 10**9, 100) == [sorted(range(9), key=lambda i: -lengths[i])]  # default: no cut
    # the token budget and the batch size still cut, and padding is counted per batch
    for b in plan_batches(lengths, 250, 2, max_padding=0.1):
        assert len(b) <= 2 and (len(b) == 1 or len(b) * max(lengths[i] for i in b) <= 250)


def test_max_padding_backend(polar_path):
    client = RewardModelClient(polar_path)
    ids = client.encode_ids(SAMPLES)
    single = [client.score_ids([x])[0] for x in ids]
    backend = TransformersBackend(polar_path, client.config, pad_token_id=client.tokenizer.pad_token_id,
                                  max_padding=None)
    assert backend.score(ids) == pytest.approx(single, abs=1e-4)
    assert backend._padding_limit() == 0.0  # None: no padding on CPU
    assert backend.forward_passes == len({len(x) for x in ids})  # one pass per length
    wide = TransformersBackend(polar_path, client.config, pad_token_id=client.tokenizer.pad_token_id)
    wide.score(ids)
    assert wide.forward_passes == 1 < backend.forward_passes


def test_the_client_batches_equal_lengths_only_on_cpu_and_on_one_thread(polar_path):
    """The in-process default on CPU: no padded pass (equal lengths share one), every pass on the
    backend's one model thread (PyTorch's CPU thread pool belongs to the calling thread)."""
    import threading

    client = RewardModelClient(polar_path)
    samples = [{"prompt": f"Question {i}?", "reference": "It is.", "output": ["Yes.", "No.", "Maybe so."][i % 3]}
               for i in range(300)]
    ids = client.encode_ids(samples)
    backend = client.local_backend
    seen, forward = [], backend._forward

    def recorded(seqs, output="reward"):
        seen.append((threading.get_ident(), [len(s) for s in seqs]))
        return forward(seqs, output)

    backend._forward = recorded
    got = client(samples) + client(samples[:150]) + client(samples[150:])
    single = [backend.score([x])[0] for x in ids[:20]]
    assert got[:20] == pytest.approx(single, abs=1e-4)
    assert got[300:] == pytest.approx(got[:300], abs=1e-4)
    lengths = [n for _, batch in seen[:-20] for n in batch]
    assert sorted(lengths) == sorted(len(x) for x in ids * 2)
    assert all(len(set(batch)) == 1 for _, batch in seen) and max(len(b) for _, b in seen) > 1
    threads = {ident for ident, _ in seen[:-20]}
    assert len(threads) == 1 and threading.get_ident() not in threads
    assert RewardModelClient(polar_path).local_backend.thread is backend.thread  # one per device, not per model


def test_non_finite_rewards_raise_naming_the_samples(polar_path):
    from rmclient import RMClientError
    from rmclient.errors import ResponseError

    client = RewardModelClient(polar_path)
    backend = client.local_backend
    poison = 77  # rows holding this token id get NaN embeddings: the model's output there is NaN

    def nan_rows(_module, inputs, out):
        rows = (inputs[0] == poison).any(dim=1)
        out[rows] = float("nan")
        return out

    hook = backend.model.get_input_embeddings().register_forward_hook(nan_rows)
    try:
        ids = [[0, 5, 6], [0, poison, 6, 8], [0, 9], [0, 10, 11, poison]]
        with pytest.raises(ResponseError, match=r"sample\(s\) 1 \(nan\), 3 \(nan\)") as err:
            backend.score(ids)
        assert isinstance(err.value, RMClientError) and err.value.endpoint == f"transformers:{polar_path}"
        with pytest.raises(ResponseError):  # through the client too: no NaN reaches the caller
            client.score_ids([[0, poison]])
        assert client.score_ids([[0, 5, 6]]) == pytest.approx(backend.score([[0, 5, 6]]))  # the rest still scores
    finally:
        hook.remove()


def _queued_behind_a_blocked_pass(client, calls, on_pass):
    """Run ``calls`` (lists of samples) concurrently while a first call holds the model thread, so that
    they wait together and travel as one merged request; ``on_pass(lengths)`` runs before each later pass.
    Returns each call's rewards or exception."""
    import asyncio
    import threading

    backend, gate, seen = client.local_backend, threading.Event(), []
    forward = backend._forward

    def recorded(seqs, output="reward"):
        if not seen:
            assert gate.wait(10)
        else:
            on_pass([len(s) for s in seqs])
        seen.append([len(s) for s in seqs])
        return forward(seqs, output)

    backend._forward = recorded

    async def run():
        first = asyncio.ensure_future(client.ascore([{"prompt": "Hold", "reference": "the", "output": "model."}]))
        await asyncio.sleep(0.2)
        tasks = [asyncio.ensure_future(client.ascore(c)) for c in calls]
        await asyncio.sleep(0.3)  # both queued behind the first pass
        gate.set()
        await first
        return await asyncio.gather(*tasks, return_exceptions=True)

    try:
        return asyncio.run(run()), seen[1:]
    finally:
        backend._forward = forward


def test_calls_merged_in_process_share_passes_and_each_gets_its_rewards_as_its_passes_end(polar_path):
    """Concurrent in-process calls that wait together make one request: the backend plans its passes
    over all their samples (equal lengths of different calls share a pass), and a call ends when its
    own last pass does, not when the merged request does."""
    import threading

    client = RewardModelClient(polar_path)
    long_ = [{"prompt": "Write a poem " * 12, "reference": "Roses are red.", "output": f"Violets {i} are blue " * 5}
             for i in range(4)]
    short = [{"prompt": f"Q{i}?", "reference": "It is.", "output": "Yes."} for i in range(4)] + [long_[0]]
    expected = client(long_), client(short)
    passes_of_one_call = client.local_backend.forward_passes
    client(long_ + short)
    passes_of_one_call = client.local_backend.forward_passes - passes_of_one_call
    first_done = threading.Event()
    short_lengths = {len(x) for x in client.encode_ids(short[:4])}
    waited = []

    def on_pass(lengths):  # the short samples' passes come last (longest first): the long call is done by then
        if set(lengths) <= short_lengths:
            waited.append(first_done.wait(10))

    original = client.ascore

    async def ascore(samples):
        out = await original(samples)
        if samples is long_:
            first_done.set()
        return out

    client.ascore = ascore
    (got_long, got_short), passes = _queued_behind_a_blocked_pass(client, [long_, short], on_pass)
    assert got_long == pytest.approx(expected[0], abs=1e-4) and got_short == pytest.approx(expected[1], abs=1e-4)
    assert len(passes) == passes_of_one_call  # one request: passes planned over both calls together
    shared = len(client.encode_ids([long_[0]])[0])
    assert [shared, shared] in passes  # long_[0] of both calls in one pass
    assert waited and all(waited)  # the long call had its rewards while the short ones were still scoring


def test_a_bad_sample_in_a_merged_request_fails_its_call_alone_and_nothing_is_scored_twice(polar_path):
    from rmclient.errors import ResponseError

    client = RewardModelClient(polar_path)
    good = [{"prompt": f"Question {i}?", "reference": "It is.", "output": "Yes."} for i in range(4)]
    expected = client(good)
    backend = client.local_backend
    bad = [{"prompt": "Fine", "reference": "It is.", "output": "Yes."},
           {"prompt": "Odd", "reference": "It is.", "output": "No."}]
    others = client.encode_ids(good + bad[:1] + [{"prompt": "Hold", "reference": "the", "output": "model."}])
    poison = next(t for t in client.encode_ids(bad[1:])[0] if all(t not in x for x in others))

    def nan_rows(_module, inputs, out):
        out[(inputs[0] == poison).any(dim=1)] = float("nan")
        return out

    rows = []
    hook = backend.model.get_input_embeddings().register_forward_hook(nan_rows)
    try:
        (got_good, got_bad), _ = _queued_behind_a_blocked_pass(client, [good, bad], rows.append)
    finally:
        hook.remove()
    assert got_good == pytest.approx(expected, abs=1e-4)
    assert isinstance(got_bad, ResponseError) and "sample(s) 1 (nan)" in str(got_bad)
    assert sum(map(len, rows)) == len(good) + len(bad) + 1  # only the bad sample was scored again, alone


def test_bad_ids_name_the_sample(polar_path):
    from rmclient import InvalidSampleError

    client = RewardModelClient(polar_path)
    for bad, message in (([], "empty"), ([0, 10**6], "ids must be in")):
        with pytest.raises(InvalidSampleError, match=message) as err:
            client.score_ids([[0, 5, 6], bad])
        assert (err.value.index, err.value.field) == (1, "input_ids")


def test_reward_architecture_without_its_code_is_refused(tmp_path):
    """Qwen2ForRewardModel weights with no modeling code load as a bare Qwen2Model: no head, no reward."""
    from rmclient.errors import ConfigurationError
    from rmclient.testing.remote_code import build_qwen2_reward_model

    path = str(build_qwen2_reward_model(tmp_path / "qwen2-rm"))
    client = RewardModelClient(path, trust_remote_code=True)
    with pytest.raises(ConfigurationError, match="declares Qwen2ForRewardModel but transformers loaded Qwen2Model"):
        client({"prompt": "q", "output": "a"})


def test_a_forked_child_scores_with_a_model_thread_of_its_own(polar_path):
    """The model thread is per process: a child forked after the parent scored does not wait on its
    parent's thread (which the child does not have)."""
    import multiprocessing

    client = RewardModelClient(polar_path)
    expected = client(SAMPLES[:2])
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()

    def child():
        queue.put(RewardModelClient(polar_path)(SAMPLES[:2]))

    proc = ctx.Process(target=child)
    proc.start()
    try:
        got = queue.get(timeout=120)
    finally:
        proc.join(timeout=30)
        if proc.is_alive():
            proc.kill()
    assert got == pytest.approx(expected, abs=1e-5)
