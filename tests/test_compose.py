"""RewardComposition: weights, normalisation, clipping and failures on known numbers."""

from __future__ import annotations

import asyncio
import math
import threading
import time

import pytest

from rmclient import ConfigurationError, InvalidSampleError, RewardModelClient, ScoringError
from rmclient.compose import Member, RewardComposition
from tests.fake_engine import FakeEngine

S = [{"prompt": "q", "output": o} for o in ("a", "bb", "ccc", "dddd")]


def const(values, name=None):
    """A plain reward function returning fixed values (by the sample's output length)."""

    def fn(samples):
        return [values[len(s["output"]) - 1] for s in samples]

    fn.__name__ = name or "const"
    return fn


def test_weights_on_known_numbers():
    combo = RewardComposition([(const([1, 2, 3, 4], "a"), 1.0), (const([10, 20, 30, 40], "b"), 0.5)])
    assert combo(S) == [6.0, 12.0, 18.0, 24.0]
    assert combo(S[1]) == 12.0  # one sample -> one float, like the client
    details = combo.score_details(S)
    assert details.raw == {"a": [1, 2, 3, 4], "b": [10, 20, 30, 40]}
    # a dict of members names them
    named = RewardComposition({"x": const([1, 1, 1, 1]), "y": (const([2, 2, 2, 2]), -1.0)})
    assert named(S) == [-1.0] * 4 and set(named.stats) == {"x", "y"}


def test_running_normalisation_across_calls():
    combo = RewardComposition([const([1, 2, 3, 4])], normalize="running", eps=0.0)
    first = combo(S[:3])  # mean 2, population std sqrt(2/3)
    z = 1 / math.sqrt(2 / 3)
    assert first == pytest.approx([-z, 0.0, z])
    second = combo(S[3:])  # now over 1,2,3,4: mean 2.5, std sqrt(1.25)
    assert second == pytest.approx([1.5 / math.sqrt(1.25)])
    stats = combo.stats["const"]
    assert (stats.count, stats.mean, stats.std) == (4, 2.5, pytest.approx(math.sqrt(1.25)))
    combo.reset_stats()
    assert combo(S[:1]) == [0.0]  # one value: its own mean


def test_group_normalisation_and_per_member_settings():
    combo = RewardComposition(
        [
            Member(const([1, 3, 10, 20], "rm"), 2.0),                       # takes the default: group
            Member(const([5, 5, 5, 5], "bonus"), 1.0, normalize=None),      # stays raw
        ],
        normalize="group", eps=0.0,
    )
    # groups {0,1} and {2,3}: each z-scores to -1, +1
    assert combo(S, group_ids=["p", "p", "r", "r"]) == pytest.approx([3.0, 7.0, 3.0, 7.0])
    # a group of one is its own mean
    assert combo(S[:3], group_ids=[0, 0, 1]) == pytest.approx([3.0, 7.0, 5.0])
    with pytest.raises(ConfigurationError, match="group_ids"):
        combo(S)


def test_clipping_per_member_then_on_the_sum():
    combo = RewardComposition(
        [Member(const([-9, 0, 2, 9], "a"), 1.0, clip=(-1, 1)), Member(const([4, 4, 4, 4], "b"), 1.0)],
        clip=(-10, 4.5),
    )
    # a clipped to [-1, 1]: -1, 0, 1, 1; plus 4; the sum clipped to 4.5
    assert combo(S) == [3.0, 4.0, 4.5, 4.5]
    both = RewardComposition([const([-9, 0, 2, 9])], member_clip=(-2, 2), clip=(-1.5, 10))
    assert both(S) == [-1.5, 0.0, 2.0, 2.0]
    with pytest.raises(ConfigurationError):
        RewardComposition([const([0] * 4)], clip=(1, -1))


def test_members_run_concurrently_sync_and_async():
    started = []

    def slow(samples):
        started.append(time.monotonic())
        time.sleep(0.4)
        return [1.0] * len(samples)

    async def aslow(samples):
        started.append(time.monotonic())
        await asyncio.sleep(0.4)
        return [2.0] * len(samples)

    combo = RewardComposition([slow, (slow, 2.0), aslow])
    t0 = time.monotonic()
    assert combo(S) == [5.0] * 4
    assert time.monotonic() - t0 < 1.0  # three 0.4 s members, not 1.2 s
    assert max(started) - min(started) < 0.3

    async def main():
        return await combo.ascore(S[:2])

    assert asyncio.run(main()) == [5.0, 5.0]  # the async entry point, from a running loop


def test_real_clients_each_get_the_sample_shape_they_take(polar_path, chat_path):
    polar, chat = RewardModelClient(polar_path), RewardModelClient(chat_path)
    samples = [
        {"prompt": "What is the capital of China?", "reference": "Beijing.", "output": out}
        for out in ("Beijing.", "Shanghai.", "I do not know.")
    ]
    p = polar(samples)
    c = chat([{"prompt": s["prompt"], "output": s["output"]} for s in samples])  # no reference for an outcome RM
    # an unforced client not named POLAR cannot tell whether to use the reference: it asks
    with pytest.raises(ConfigurationError, match="recipe='polar'.*recipe='chat_template'"):
        RewardComposition([(polar, 1.0), (chat, -0.25)])(samples)
    orm = RewardModelClient(chat_path, recipe="chat_template")
    combo = RewardComposition([(polar, 1.0), (orm, -0.25), (const([0] * 20, "zero"), 3.0)])
    got = combo(samples)
    assert got == pytest.approx([a - 0.25 * b for a, b in zip(p, c)], rel=1e-6)
    assert combo.score_details(samples).raw["tiny-polar"] == pytest.approx(p, rel=1e-6)
    # without references in the data the unforced outcome RM needs no recipe
    plain = [{"prompt": s["prompt"], "output": s["output"]} for s in samples]
    assert RewardComposition([chat])(plain) == pytest.approx(c, rel=1e-6)


def test_one_failing_member_follows_the_failure_policy(polar_path):
    samples = [{"prompt": "q", "reference": "r", "output": o} for o in ("a", "b", "c")]
    local = RewardModelClient(polar_path)
    good = local(samples)

    def partial_failure(s):
        raise ScoringError({1: "server said no"}, [0.5, None, 0.7])

    combo = RewardComposition([(local, 1.0), Member(partial_failure, 2.0, name="flaky")])
    with pytest.raises(ScoringError) as err:
        combo(samples)
    assert err.value.failures == {1: "flaky: server said no"}
    assert err.value.rewards[1] is None
    assert err.value.rewards[0] == pytest.approx(good[0] + 1.0, rel=1e-6)
    assert err.value.rewards[2] == pytest.approx(good[2] + 1.4, rel=1e-6)

    lenient = RewardComposition([(local, 1.0), Member(partial_failure, 2.0, name="flaky")], on_error="nan")
    got = lenient(samples)
    assert math.isnan(got[1]) and got[0] == pytest.approx(good[0] + 1.0, rel=1e-6)

    # a real client whose server rejects everything: every sample fails, named by member
    with FakeEngine("sglang", "0.4.6.post1") as fake:
        fake.script = [400] * 50
        remote = RewardModelClient(polar_path, server_type="sglang", server_address=fake.url, max_attempts=1)
        combo = RewardComposition({"local": local, "remote": remote})
        with pytest.raises(ScoringError) as err:
            combo(samples)
        assert sorted(err.value.failures) == [0, 1, 2]
        assert all(why.startswith("remote: ") for why in err.value.failures.values())
        fake.script = [400] * 50
        assert all(math.isnan(x) for x in RewardComposition({"local": local, "remote": remote}, on_error="nan")(samples))
        remote.close()

    def broken(s):
        raise RuntimeError("bug in a reward function")

    with pytest.raises(ScoringError, match="broken: RuntimeError: bug") as err:
        RewardComposition([const([1, 1, 1, 1]), broken])(S)
    assert isinstance(err.value.__cause__, RuntimeError)
    # a malformed sample is the caller's error, never a NaN
    with pytest.raises(InvalidSampleError):
        RewardComposition([local], on_error="nan")([{"prompt": "q", "output": "o"}])


def test_running_stats_skip_failed_and_nan_values():
    def with_nan(samples):
        return [1.0, float("nan"), 3.0][: len(samples)]

    combo = RewardComposition([with_nan], normalize="running", eps=0.0, on_error="nan")
    got = combo(S[:3])
    assert got[0] == pytest.approx(-1.0) and math.isnan(got[1]) and got[2] == pytest.approx(1.0)
    assert combo.stats["with_nan"].count == 2


@pytest.mark.parametrize("bad", [None, float("nan"), float("inf")])
def test_a_member_returning_none_or_nan_has_failed(bad):
    def with_bad(samples):
        return [1.0, bad, 3.0, 4.0][: len(samples)]

    async def async_bad(samples):
        return with_bad(samples)

    for member in (with_bad, async_bad):
        combo = RewardComposition({"ok": const([1, 1, 1, 1]), "bad": member})
        with pytest.raises(ScoringError) as err:  # on_error="raise": never a silent NaN
            combo(S)
        assert err.value.failures == {1: f"bad: returned {'inf' if bad == float('inf') else 'None/NaN'}"}
        assert err.value.rewards == [2.0, None, 4.0, 5.0]
        got = RewardComposition({"ok": const([1, 1, 1, 1]), "bad": member}, on_error="nan")(S)
        assert math.isnan(got[1]) and [got[0], got[2], got[3]] == [2.0, 4.0, 5.0]


def test_a_lenient_client_member_does_not_make_the_composition_lenient(polar_path):
    samples = [{"prompt": "q", "reference": "r", "output": o} for o in ("a", "b")]
    with FakeEngine("sglang", "0.4.6.post1") as fake:
        fake.script = [400] * 50
        lenient = RewardModelClient(
            polar_path, server_type="sglang", server_address=fake.url, max_attempts=1, on_error="nan"
        )
        with pytest.raises(ScoringError) as err:
            RewardComposition({"remote": lenient, "one": const([1] * 4)})(samples)
        assert err.value.failures == {0: "remote: returned None/NaN", 1: "remote: returned None/NaN"}
        fake.script = [400] * 50
        got = RewardComposition({"remote": lenient, "one": const([1] * 4)}, on_error="nan")(samples)
        assert all(math.isnan(x) for x in got)
        lenient.close()


def test_trainer_hooks_of_a_composition():
    seen = []

    def record(samples):
        seen.append(samples)
        return [float(len(s["output"])) for s in samples]

    combo = RewardComposition([record], normalize="group", eps=0.0, name="combo")
    fn = combo.as_reward_func(reference_column="gold")
    assert fn.__name__ == "combo"
    # TRL: two prompts x two generations; groups come from the prompts
    got = fn(["p1", "p1", "p2", "p2"], ["a", "bbb", "cc", "cc"], completion_ids=None, trainer_state=None,
             gold=["g1", "g1", "g2", "g2"])
    assert got == pytest.approx([-1.0, 1.0, 0.0, 0.0])
    assert seen[-1][0] == {"prompt": "p1", "output": "a", "reference": "g1"}
    # verl, batch manager
    batch = combo.as_compute_score(batch=True)
    got = batch(data_sources=["d"] * 3, solution_strs=["a", "bbb", "z"], ground_truths=["g", "g", "h"],
                extra_infos=[{"prompt": "x"}, {"prompt": "x"}, {"prompt": "y"}])
    assert got == pytest.approx([-1.0, 1.0, 0.0])
    single = RewardComposition([record]).as_compute_score()
    assert single(data_source="d", solution_str="abcd", ground_truth="g", extra_info={"prompt": "x"}) == 4.0


def test_composition_is_thread_safe_for_concurrent_callers():
    combo = RewardComposition([const([1, 2, 3, 4])], normalize="running", eps=0.0)
    errors = []

    def worker():
        try:
            for _ in range(20):
                combo(S)
        except Exception as e:  # pragma: no cover
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert combo.stats["const"].count == 4 * 20 * 4
    assert combo.stats["const"].mean == pytest.approx(2.5)
