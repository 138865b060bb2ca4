"""The ``rmclient`` command line end to end on tiny models: score, eval, best-of-n, parity, help, exit codes.

Most runs call ``rmclient.cli.main([...])`` in-process; the entry point itself
is run once as a subprocess, and the resume test kills a subprocess mid-run.
Rewards that must be known exactly come from ``tests.fake_engine`` (derived
from the token ids the client sends).
"""

from __future__ import annotations

import json
import math
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

import pytest

from rmclient import RewardModelClient
from rmclient.cli import main
from rmclient.commands.common import Backend, InputError, open_output, parse_backend
from rmclient.commands.parity import _kendall_tau_python, compare, format_report, kendall_tau
from tests.fake_engine import FakeEngine, reward_of

REPO = Path(__file__).resolve().parents[1]
ENTRY_POINT = Path(sys.executable).parent / "rmclient"
QUIET = ["--no-progress"]


def write_jsonl(path: Path, rows: List[Dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def read_jsonl(path: Path) -> List[Dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def polar_rows(n: int) -> List[Dict[str, Any]]:
    """Distinct POLAR samples with extra fields that must survive."""
    return [
        {"id": i, "prompt": f"What is {i} + {i}?", "reference": str(2 * i), "output": f"It is {2 * i + (i % 3)}.",
         "meta": {"tags": ["x", i], "note": "ünïcode"}}
        for i in range(n)
    ]


def assert_scored_like(out: Path, clean: Path, n: int = -1) -> None:
    """``out`` holds the first ``n`` lines of ``clean`` (all when -1), rewards equal up to batching noise."""
    got, want = read_jsonl(out), read_jsonl(clean)
    want = want if n < 0 else want[:n]
    assert [{k: v for k, v in g.items() if k != "reward"} for g in got] == [
        {k: v for k, v in w.items() if k != "reward"} for w in want]
    assert [g["reward"] for g in got] == pytest.approx([w["reward"] for w in want], abs=1e-5)


def ids_of(path: str, fake: FakeEngine, samples: List[Dict[str, Any]]) -> List[List[int]]:
    """The token ids the CLI sends for ``samples`` (same model, same defaults)."""
    return RewardModelClient(path, server_type=fake.engine, server_address=fake.url).encode_ids(samples)


def sent_ids(requests: List[Dict[str, Any]]) -> List[tuple]:
    """Every input of every vLLM ``/pooling`` request in ``requests``."""
    return [tuple(x) for r in requests if r["path"] == "/pooling" for x in r["body"]["input"]]


# --- help and usage -------------------------------------------------------------------------------


@pytest.mark.parametrize("command", [[], ["score"], ["eval"], ["best-of-n"], ["parity"], ["demo"], ["launch"]])
def test_help_exits_0(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(command + ["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: rmclient")
    if command and command[0] in ("score", "eval", "best-of-n", "parity"):
        assert "examples:" in out and "exit codes:" in out and "--model PATH" in out
    if not command:
        for name in ("score", "eval", "best-of-n", "parity", "demo", "launch"):
            assert f"    {name} " in out


def test_serve_is_registered_when_present(capsys):
    pytest.importorskip("rmclient.serve")
    with pytest.raises(SystemExit) as exit_:
        main(["serve", "--help"])
    assert exit_.value.code == 0
    assert "usage: rmclient serve" in capsys.readouterr().out


def test_launch_dry_run_keeps_the_double_dash_split(capsys):
    argv = ["launch", "vllm", "org/rm", "--architecture", "Qwen2ForRewardModel", "--engine-version", "0.10.2",
            "--dry-run", "--", "--enforce-eager"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "vllm.entrypoints.openai.api_server --model org/rm" in out and out.strip().endswith("--enforce-eager")


def test_usage_errors_exit_2(tmp_path, polar_path, capsys):
    data = write_jsonl(tmp_path / "in.jsonl", polar_rows(2))
    out = str(tmp_path / "out.jsonl")
    base = ["--model", polar_path] + QUIET
    cases = [
        (["score", str(tmp_path / "missing.jsonl"), "-o", out] + base, "no such file"),
        (["score", str(data), "-o", out, "--backend", "vllm"] + base, "needs --server-address"),
        (["score", str(data), "-o", out, "--server-address", "127.0.0.1:1"] + base, "needs a server --backend"),
        (["score", str(data), "-o", out, "--model", str(tmp_path / "no-model")] + QUIET, "cannot load"),
        (["score", str(data), "-o", str(data)] + base, "the output file is the input file"),
        (["eval", str(data), "--chunk-size", "0"] + base, "--chunk-size"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        assert message in capsys.readouterr().err, argv
    for argv in (
        ["score", str(data), "-o", out, "--backend", "nope"] + base,  # argparse: bad BACKEND spec
        ["parity", str(data), "--a", "transformers@x:1", "--b", "transformers"] + base,
        ["score", str(data)] + base,  # no -o
        ["score", str(data), "-o", out] + base + ["--", "extra"],
    ):
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 2, argv
    assert not Path(out).exists()  # nothing was created by a failed start


def test_batch_size_help_gives_both_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["score", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "(transformers, default 32)" in help_text and "(servers, default 256;" in help_text


@pytest.mark.parametrize("command", ["score", "best-of-n", "eval"])
@pytest.mark.parametrize("how", ["same path", "symlink", "resume"])
def test_output_that_is_the_input_is_refused_and_the_input_kept(tmp_path, polar_path, capsys, command, how):
    rows = [{"prompt": f"q{i}", "reference": "r", "output": "o", "outputs": ["a", "b"], "chosen": "a",
             "rejected": "b"} for i in range(3)]
    data = write_jsonl(tmp_path / "in.jsonl", rows)
    before = data.read_bytes()
    out = data
    if how == "symlink":
        out = tmp_path / "link.jsonl"
        out.symlink_to(data)
    argv = [command, str(data), "-o", str(out), "--model", polar_path] + QUIET
    if how == "resume" and command != "eval":  # eval has no --resume
        argv.append("--resume")
    assert main(argv) == 2
    assert "the output file is the input file" in capsys.readouterr().err
    assert data.read_bytes() == before


def test_open_output_refuses_the_input_before_truncating(tmp_path):
    data = write_jsonl(tmp_path / "in.jsonl", polar_rows(2))
    before = data.read_bytes()
    for resume in (False, True):
        with pytest.raises(InputError, match="the output file is the input file"):
            open_output(str(data), resume=resume, input_path=str(data))
    assert data.read_bytes() == before
    f, done = open_output(str(tmp_path / "other.jsonl"), resume=False, input_path=str(data))
    f.close()
    assert done == 0


def test_backend_spec():
    assert parse_backend("transformers") == Backend("transformers")
    assert parse_backend("vllm@127.0.0.1:8000") == Backend("vllm", ("127.0.0.1:8000",))
    assert parse_backend("sglang@http://a:1, http://b:2") == Backend("sglang", ("http://a:1", "http://b:2"))
    assert str(parse_backend("lmdeploy@h:1,h:2")) == "lmdeploy@h:1,h:2"


# --- score ----------------------------------------------------------------------------------------


def test_score_keeps_fields_adds_reward_in_chunks(tmp_path, polar_path, capsys):
    rows = polar_rows(11)
    data = write_jsonl(tmp_path / "in.jsonl", rows)
    (tmp_path / "in.jsonl").write_text(data.read_text().replace("\n", "\n\n", 1))  # a blank line is skipped
    out = tmp_path / "out.jsonl"
    argv = ["score", str(data), "-o", str(out), "--model", polar_path, "--chunk-size", "4", "--progress"]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "score: 100% [" in err and "lines/s" in err and "ETA" in err and "scored 11 lines" in err
    got = read_jsonl(out)
    expected = RewardModelClient(polar_path)(rows)
    assert [{k: v for k, v in g.items() if k != "reward"} for g in got] == rows
    assert [g["reward"] for g in got] == pytest.approx(expected, abs=1e-5)
    assert "ünïcode" in out.read_text(encoding="utf-8")  # not escaped

    assert main(["score", str(data), "-o", str(out), "--model", polar_path, "--reward-field", "score"] + QUIET) == 0
    assert [g["score"] for g in read_jsonl(out)] == pytest.approx(expected, abs=1e-5)


def test_score_entry_point_stdin_to_stdout(tmp_path, polar_path):
    if not ENTRY_POINT.exists():
        pytest.skip(f"{ENTRY_POINT} is not installed")
    rows = polar_rows(3)
    proc = subprocess.run(
        [str(ENTRY_POINT), "score", "-", "-o", "-", "--model", polar_path],
        input="".join(json.dumps(r) + "\n" for r in rows), capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    got = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [g["id"] for g in got] == [0, 1, 2]
    assert [g["reward"] for g in got] == pytest.approx(RewardModelClient(polar_path)(rows), abs=1e-5)
    assert "score:" not in proc.stderr  # no progress bar when stderr is not a terminal


def test_score_bad_lines_exit_2_keep_what_was_done_then_resume(tmp_path, polar_path, capsys):
    rows = polar_rows(8)
    lines = [json.dumps(r) for r in rows]
    good = write_jsonl(tmp_path / "good.jsonl", rows)
    clean = tmp_path / "clean.jsonl"
    assert main(["score", str(good), "-o", str(clean), "--model", polar_path] + QUIET) == 0

    data, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    argv = ["score", str(data), "-o", str(out), "--model", polar_path, "--chunk-size", "3"] + QUIET
    # line 5 is not JSON: lines 1-4 (a whole chunk and part of the next) are scored and written
    data.write_text("\n".join(lines[:4] + ['{"prompt": "x", ', "[]"] + lines[4:]) + "\n")
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"{data} line 5: not valid JSON" in err
    assert_scored_like(out, clean, 4)
    # line 6 is not an object
    data.write_text("\n".join(lines[:5] + ["[1, 2]"] + lines[5:]) + "\n")
    assert main(argv + ["--resume"]) == 2
    assert "line 6: expected a JSON object, got list" in capsys.readouterr().err
    assert len(read_jsonl(out)) == 5
    # line 7 lacks a field: named with its line number; the lines before it are written
    broken = dict(rows[6])
    del broken["output"]
    data.write_text("\n".join(lines[:6] + [json.dumps(broken)] + lines[7:]) + "\n")
    assert main(argv + ["--resume"]) == 2
    assert "line 7, field 'output': missing" in capsys.readouterr().err
    assert len(read_jsonl(out)) == 6
    # fixed: --resume completes it, equal to a clean run
    data.write_text("\n".join(lines) + "\n")
    assert main(argv + ["--resume"]) == 0
    assert "already holds 6 scored lines" in capsys.readouterr().err
    assert_scored_like(out, clean)
    # an output longer than the input is not this input's output
    data.write_text("\n".join(lines[:3]) + "\n")
    assert main(argv + ["--resume"]) == 2
    assert "has only 3" in capsys.readouterr().err


@pytest.mark.parametrize("token, message", [
    ("NaN", "line 3: NaN is not valid JSON"),
    ("-Infinity", "line 3: -Infinity is not valid JSON"),
    ("1e999", "line 3: the number 1e999 is out of range"),
])
def test_nan_and_infinity_in_the_input_are_bad_lines_exit_2(tmp_path, polar_path, capsys, token, message):
    rows = polar_rows(5)
    lines = [json.dumps(r) for r in rows]
    lines[2] = lines[2][:-1] + f', "weight": {token}}}'
    data, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    data.write_text("\n".join(lines) + "\n")
    argv = ["score", str(data), "-o", str(out), "--model", polar_path] + QUIET
    assert main(argv) == 2
    assert f"{data} {message}" in capsys.readouterr().err
    assert [g["id"] for g in read_jsonl(out)] == [0, 1]  # the lines before it are written
    assert main(argv + ["--resume"]) == 2  # and --resume stops at the same line, no traceback
    assert message in capsys.readouterr().err
    assert [g["id"] for g in read_jsonl(out)] == [0, 1]


@pytest.mark.parametrize("command, missing", [("score", "output"), ("best-of-n", "outputs"), ("eval", "rejected")])
def test_a_bad_field_writes_the_lines_before_it_then_exits_2(tmp_path, polar_path, capsys, command, missing):
    """The three streaming commands behave alike: the good lines before a bad one are scored and written."""
    rows = [{"id": i, "prompt": f"q{i}", "reference": "r", "output": f"o{i}", "outputs": [f"a{i}", "b"],
             "chosen": f"a{i}", "rejected": "b"} for i in range(5)]
    del rows[3][missing]
    data, out = write_jsonl(tmp_path / "in.jsonl", rows), tmp_path / "out.jsonl"
    argv = [command, str(data), "-o", str(out), "--model", polar_path, "--chunk-size", "10"] + QUIET
    assert main(argv) == 2
    assert f"line 4, field '{missing}': missing" in capsys.readouterr().err
    assert [g["id"] for g in read_jsonl(out)] == [0, 1, 2]


def test_score_unreachable_server_exits_1(tmp_path, polar_path, capsys):
    with FakeEngine("vllm", "0.32.0") as fake:
        url = fake.url
    data = write_jsonl(tmp_path / "in.jsonl", polar_rows(3))
    out = tmp_path / "out.jsonl"
    argv = ["score", str(data), "-o", str(out), "--model", polar_path, "--backend", f"vllm@{url}",
            "--max-attempts", "1", "--deadline", "5"] + QUIET
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "3 samples could not be scored (input lines 1-3)" in err and "ConnectError" in err
    assert out.read_text() == ""


def test_score_failed_samples_exit_1_with_lines_or_null_with_on_error_nan(tmp_path, polar_path, capsys):
    rows = polar_rows(6)
    data = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.jsonl"
    with FakeEngine("vllm", "0.32.0") as fake:
        ids = ids_of(polar_path, fake, rows)
        fake.poison = lambda x: list(x) == ids[3]  # any request holding line 4 gets a 400
        argv = ["score", str(data), "-o", str(out), "--model", polar_path, "--backend", "vllm",
                "--server-address", fake.url, "--batch-size", "2"] + QUIET
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert "1 sample could not be scored (input lines 4)" in err and "poisoned input" in err
        assert [g["reward"] for g in read_jsonl(out)] == [reward_of(x) for x in ids[:3]]  # the lines before it

        assert main(argv + ["--on-error", "nan"]) == 0
        assert "1 samples could not be scored and have reward: null (lines 4)" in capsys.readouterr().err
        got = [g["reward"] for g in read_jsonl(out)]
        assert got == [reward_of(x) for x in ids[:3]] + [None] + [reward_of(x) for x in ids[4:]]



def test_score_sends_the_next_chunks_while_one_is_slow_and_writes_in_order(tmp_path, polar_path, capsys):
    """Chunks of one request each: while the first stalls, the next ones are scored; the output keeps input
    order, and a failed chunk writes only the chunks before it, though a later one was done first."""
    rows = polar_rows(6)
    data = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.jsonl"
    with FakeEngine("vllm", "0.32.0", stall=2.0, delay=0.5) as fake:
        ids = ids_of(polar_path, fake, rows)
        argv = ["score", str(data), "-o", str(out), "--model", polar_path, "--backend", f"vllm@{fake.url}",
                "--chunk-size", "2", "--batch-size", "2"] + QUIET
        fake.script = ["stall"]  # the first request (lines 1-2) answers after 2 s, the others after 0.5 s
        assert main(argv) == 0
        assert fake.max_concurrent == 3  # all three chunks were in flight at once
        assert [g["id"] for g in read_jsonl(out)] == [r["id"] for r in rows]
        assert [g["reward"] for g in read_jsonl(out)] == [reward_of(x) for x in ids]

        fake.poison = lambda x: list(x) == ids[2]  # line 3, in the second chunk, fails at once
        fake.script = ["stall"]
        assert main(argv) == 1
        assert "1 sample could not be scored (input lines 3)" in capsys.readouterr().err
        assert [g["reward"] for g in read_jsonl(out)] == [reward_of(x) for x in ids[:2]]

def test_score_resume_after_kill_scores_each_line_once(tmp_path, polar_path):
    """Kill a run on a slow server mid-file, tear its last line, resume: nothing is scored twice."""
    rows = polar_rows(40)
    data = write_jsonl(tmp_path / "in.jsonl", rows)
    out, clean = tmp_path / "out.jsonl", tmp_path / "clean.jsonl"
    with FakeEngine("vllm", "0.32.0", delay=0.25) as fake:
        ids = [tuple(x) for x in ids_of(polar_path, fake, rows)]
        assert len(set(ids)) == len(ids)
        argv = ["score", str(data), "-o", str(out), "--model", polar_path, "--backend", f"vllm@{fake.url}",
                "--chunk-size", "4", "--batch-size", "2"] + QUIET
        proc = subprocess.Popen([sys.executable, "-m", "rmclient"] + argv, cwd=REPO,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 120
            while out.read_bytes().count(b"\n") < 8 if out.exists() else True:
                assert proc.poll() is None, proc.communicate()
                assert time.monotonic() < deadline, "no lines written"
                time.sleep(0.02)
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
        killed_run = sent_ids(fake.requests)
        assert len(killed_run) == len(set(killed_run))
        kept = out.read_bytes().count(b"\n")
        assert 8 <= kept < 40, kept
        with out.open("ab") as f:
            f.write(b'{"id": 99, "prompt": "a line cut short by the ki')  # a torn last write

        before = len(fake.requests)
        assert main(argv + ["--resume"]) == 0
        resumed = sent_ids(fake.requests[before:])
        assert sorted(resumed) == sorted(ids[kept:])  # every remaining line once, no kept line again
        assert set(killed_run) >= set(ids[:kept])

        assert main(["score", str(data), "-o", str(clean), "--model", polar_path, "--backend",
                     f"vllm@{fake.url}"] + QUIET) == 0
    assert out.read_bytes() == clean.read_bytes()
    assert [g["reward"] for g in read_jsonl(out)] == [reward_of(x) for x in ids]


# --- eval -----------------------------------------------------------------------------------------


def _ranked_pair(polar_path, fake, prompt: str, candidates: List[str]):
    """Two candidate outputs with different rewards on the fake engine: (higher, lower, r_high, r_low)."""
    samples = [{"prompt": prompt, "reference": "42", "output": c} for c in candidates]
    rewards = [reward_of(x) for x in ids_of(polar_path, fake, samples)]
    (r1, c1), (r2, c2) = sorted(zip(rewards, candidates), reverse=True)[:2]
    assert r1 > r2
    return c1, c2, r1, r2


def test_eval_known_accuracy_subsets_ties_margins(tmp_path, polar_path, capsys):
    with FakeEngine("vllm", "0.32.0") as fake:
        rows, expected = [], {"a": [], "b": []}
        plan = [("a", "right"), ("a", "right"), ("a", "wrong"), ("a", "right"), ("b", "tie"), ("b", "right"),
                ("b", "tie")]
        for i, (subset, kind) in enumerate(plan):
            prompt = f"question {i}"
            hi, lo, r_hi, r_lo = _ranked_pair(polar_path, fake, prompt, [f"answer {i}", f"reply {i}!", f"{i}"])
            if kind == "right":
                chosen, rejected, margin = hi, lo, r_hi - r_lo
            elif kind == "wrong":
                chosen, rejected, margin = lo, hi, r_lo - r_hi
            else:
                chosen, rejected, margin = hi, hi, 0.0
            rows.append({"prompt": prompt, "reference": "42", "chosen": chosen, "rejected": rejected,
                         "subset": subset})
            expected[subset].append((kind, margin))
        data = write_jsonl(tmp_path / "pairs.jsonl", rows)
        scored = tmp_path / "scored.jsonl"
        argv = ["eval", str(data), "--model", polar_path, "--backend", f"vllm@{fake.url}", "--chunk-size", "3"]
        assert main(argv + ["--json", "-o", str(scored)] + QUIET) == 0
        result = json.loads(capsys.readouterr().out)

        assert main(argv + QUIET) == 0
        table = capsys.readouterr().out
    assert result["pairs"] == 7 and result["correct"] == 4 and result["ties"] == 2 and result["failed"] == 0
    assert result["accuracy"] == 4 / 7
    a, b = result["subsets"]["a"], result["subsets"]["b"]
    assert (a["pairs"], a["correct"], a["accuracy"], a["ties"]) == (4, 3, 0.75, 0)
    assert (b["pairs"], b["correct"], b["accuracy"], b["ties"]) == (3, 1, 1 / 3, 2)  # ties count as wrong
    assert a["mean_margin"] == pytest.approx(sum(m for _, m in expected["a"]) / 4, abs=1e-9)
    assert b["mean_margin"] == pytest.approx(sum(m for _, m in expected["b"]) / 3, abs=1e-9)
    all_margins = [m for s in "ab" for _, m in expected[s]]
    assert result["mean_margin"] == pytest.approx(sum(all_margins) / 7, abs=1e-9)
    assert result["subset_mean_accuracy"] == pytest.approx((0.75 + 1 / 3) / 2)
    assert expected["a"][2][1] < 0  # the wrong pair has a negative margin
    lines = {line.split()[0]: line.split() for line in table.splitlines() if line and line[0].isalpha()}
    assert lines["a"][1:4] == ["4", "0.7500", "0"] and lines["b"][1:4] == ["3", "0.3333", "2"]
    assert lines["overall"][1:4] == ["7", "0.5714", "2"]
    per_pair = read_jsonl(scored)
    assert [p["subset"] for p in per_pair] == [s for s, _ in plan]
    assert [p["chosen_reward"] - p["rejected_reward"] for p in per_pair] == pytest.approx(
        [m for s in "ab" for _, m in expected[s]], abs=1e-9)


def test_eval_conversations_and_field_errors(tmp_path, chat_path, capsys):
    conv = lambda answer: [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": answer}]  # noqa: E731
    rows = [{"chosen": conv("4"), "rejected": conv("5")},
            {"prompt": "2+2?", "chosen": "4", "rejected": [{"role": "assistant", "content": "22"}]}]
    data = write_jsonl(tmp_path / "pairs.jsonl", rows)
    assert main(["eval", str(data), "--model", chat_path, "--json"] + QUIET) == 0
    result = json.loads(capsys.readouterr().out)
    client = RewardModelClient(chat_path)
    r = client([{"messages": conv("4")}, {"messages": conv("5")},
                {"prompt": "2+2?", "output": "4"},
                {"prompt": "2+2?", "output": [{"role": "assistant", "content": "22"}]}])
    assert result["pairs"] == 2 and result["subsets"] == {}
    assert result["correct"] == (r[0] > r[1]) + (r[2] > r[3])
    assert result["mean_margin"] == pytest.approx(((r[0] - r[1]) + (r[2] - r[3])) / 2, abs=1e-5)

    rows.append({"prompt": "2+2?", "chosen": "4", "rejected": [{"role": "assistant"}]})
    write_jsonl(data, rows)
    assert main(["eval", str(data), "--model", chat_path] + QUIET) == 2
    assert "line 3, field 'rejected[0].content': missing" in capsys.readouterr().err
    write_jsonl(data, [{"prompt": "2+2?", "chosen": "4"}])
    assert main(["eval", str(data), "--model", chat_path] + QUIET) == 2
    assert "line 1, field 'rejected': missing" in capsys.readouterr().err
    data.write_text("\n")
    assert main(["eval", str(data), "--model", chat_path] + QUIET) == 2
    assert "no preference pairs" in capsys.readouterr().err


def test_eval_failed_samples_exit_1_or_count_as_wrong(tmp_path, polar_path, capsys):
    rows = [{"prompt": f"q{i}", "reference": "r", "chosen": f"good {i}", "rejected": f"bad {i}"} for i in range(3)]
    data = write_jsonl(tmp_path / "pairs.jsonl", rows)
    with FakeEngine("lmdeploy") as fake:
        bad = ids_of(polar_path, fake, [{"prompt": "q1", "reference": "r", "output": "bad 1"}])[0]
        fake.poison = lambda x: list(x) == bad
        argv = ["eval", str(data), "--model", polar_path, "--backend", f"lmdeploy@{fake.url}", "--json"] + QUIET
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert "1 sample could not be scored (input lines 2)" in err and "--on-error nan" in err
        assert main(argv + ["--on-error", "nan"]) == 0
        captured = capsys.readouterr()
        result = json.loads(captured.out)
        assert result["failed"] == 1 and result["pairs"] == 3 and result["correct"] <= 2
        assert "1 pairs had a sample that could not be scored; counted as wrong" in captured.err


def test_eval_plot(tmp_path, polar_path, capsys):
    pytest.importorskip("matplotlib")
    rows = [{"prompt": f"q{i}", "reference": "a", "chosen": "a", "rejected": "b" * i} for i in range(6)]
    data = write_jsonl(tmp_path / "pairs.jsonl", rows)
    png = tmp_path / "dist.png"
    assert main(["eval", str(data), "--model", polar_path, "--plot", str(png)] + QUIET) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    assert "plot saved" in capsys.readouterr().err


def test_eval_plot_without_matplotlib_is_a_clear_usage_error(tmp_path, polar_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    data = write_jsonl(tmp_path / "pairs.jsonl", [{"prompt": "q", "reference": "a", "chosen": "a", "rejected": "b"}])
    assert main(["eval", str(data), "--model", polar_path, "--plot", str(tmp_path / "x.png")] + QUIET) == 2
    assert "--plot needs matplotlib" in capsys.readouterr().err


# --- best-of-n ------------------------------------------------------------------------------------


def test_best_of_n_picks_the_known_best(tmp_path, polar_path, capsys):
    rng = random.Random(0)
    rows = [{"id": i, "prompt": f"Say something about {i}.", "reference": "Something.",
             "outputs": [f"candidate {rng.randint(0, 10**6)}" for _ in range(rng.randint(1, 5))]}
            for i in range(9)]
    data = write_jsonl(tmp_path / "groups.jsonl", rows)
    out = tmp_path / "best.jsonl"
    with FakeEngine("sglang", "0.5.23") as fake:
        assert main(["best-of-n", str(data), "-o", str(out), "--model", polar_path, "--backend",
                     f"sglang@{fake.url}", "--chunk-size", "4"] + QUIET) == 0
        got = read_jsonl(out)
        assert len(got) == 9
        for row, g in zip(rows, got):
            samples = [{"prompt": row["prompt"], "reference": row["reference"], "output": o} for o in row["outputs"]]
            rewards = [reward_of(x) for x in ids_of(polar_path, fake, samples)]
            best = rewards.index(max(rewards))
            assert {k: g[k] for k in row} == row
            assert g["rewards"] == rewards and g["best_index"] == best and g["best_output"] == row["outputs"][best]
    rows[5]["outputs"] = []
    write_jsonl(data, rows)
    assert main(["best-of-n", str(data), "-o", str(out), "--model", polar_path] + QUIET) == 2
    assert "line 6, field 'outputs': empty" in capsys.readouterr().err
    assert [g["id"] for g in read_jsonl(out)] == [0, 1, 2, 3, 4]  # the lines before it are kept
    rows[5]["outputs"] = ["fine", {"role": "assistant"}]
    write_jsonl(data, rows)
    assert main(["best-of-n", str(data), "-o", str(out), "--model", polar_path, "--resume"] + QUIET) == 2
    assert "line 6, field 'outputs[1]" in capsys.readouterr().err


# --- parity ---------------------------------------------------------------------------------------


def test_parity_transformers_vs_transformers_passes(tmp_path, polar_path, capsys):
    data = write_jsonl(tmp_path / "in.jsonl", polar_rows(12))
    assert main(["parity", str(data), "--model", polar_path, "--a", "transformers", "--b", "transformers",
                 "--json"] + QUIET) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["passed"] and result["samples"] == 12
    assert result["max_abs_diff"] <= 1e-6 and result["kendall_tau"] == pytest.approx(1.0)


def test_parity_transformers_vs_our_server_passes(tmp_path, polar_path, capsys):
    serve = pytest.importorskip("rmclient.serve")
    data = write_jsonl(tmp_path / "in.jsonl", polar_rows(12))
    with serve.ServerThread(serve.RewardServer(polar_path)) as server:
        assert main(["parity", str(data), "--model", polar_path, "--a", "transformers", "--b",
                     f"sglang@{server.url}"] + QUIET) == 0
    out = capsys.readouterr().out
    assert "result:           PASS" in out and "Kendall tau:      1.000000" in out


def test_parity_fails_with_a_clear_message_when_a_backend_differs(tmp_path, polar_path, capsys):
    data = write_jsonl(tmp_path / "in.jsonl", polar_rows(10))
    with FakeEngine("vllm", "0.32.0") as fake:
        argv = ["parity", str(data), "--model", polar_path, "--a", "transformers", "--b", f"vllm@{fake.url}"]
        assert main(argv + QUIET) == 1
        captured = capsys.readouterr()
        assert "result:           FAIL" in captured.out
        assert f"rmclient parity: FAILED: transformers vs vllm@{fake.url}: max |a - b| = " in captured.err
        assert "exceeds the tolerance 0.001 (worst at line" in captured.err

        assert main(argv + ["--json", "--tolerance", "1e9", "--min-tau", "1.01"] + QUIET) == 1
        result = json.loads(capsys.readouterr().out)
        assert result["passed"] is False and result["max_abs_diff"] > 1e-3 and -1 <= result["kendall_tau"] <= 1
        assert main(argv + ["--tolerance", "1e9"] + QUIET) == 0  # within a (huge) tolerance: passes


def test_kendall_tau():
    assert kendall_tau([1, 2, 3, 4, 5], [3, 4, 1, 2, 5]) == pytest.approx(0.2)  # 6 concordant, 4 discordant
    assert kendall_tau([1, 1, 2], [1, 2, 2]) == pytest.approx(0.5)  # tau-b: one tie on each side
    assert kendall_tau([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert math.isnan(kendall_tau([1, 1, 1], [1, 2, 3])) and math.isnan(kendall_tau([1], [2]))
    rng = random.Random(1)
    x = [rng.randint(0, 5) for _ in range(60)]
    y = [v + rng.randint(-2, 2) for v in x]
    assert kendall_tau(x, y) == pytest.approx(_kendall_tau_python(x, y))


def test_kendall_tau_100k_is_fast_and_leaves_out_nan():
    rng = random.Random(3)
    x = [rng.random() for _ in range(100_000)]
    y = [v + rng.gauss(0, 0.1) for v in x]
    start = time.monotonic()
    tau = kendall_tau(x, y)
    assert time.monotonic() - start < 5
    assert 0.7 < tau < 0.9
    assert kendall_tau(x[:300], y[:300]) == pytest.approx(_kendall_tau_python(x[:300], y[:300]))
    nan = float("nan")
    assert kendall_tau([1, 2, nan, 3, 4], [1, 2, 0, nan, 3]) == pytest.approx(1.0)
    assert math.isnan(kendall_tau([nan, nan, 1], [1, 2, nan]))


def test_parity_compare_reports_nan_rewards_instead_of_crashing():
    nan = float("nan")
    result = compare([1.0, nan, 3.0, 4.0, nan], [1.0, 2.0, 3.5, 4.0, nan], [10, 11, 12, 13, 14])
    assert result["samples"] == 5 and result["nan_excluded"] == 2 and result["nan_one_sided_lines"] == [11]
    assert result["max_abs_diff"] == 0.5 and result["worst_line"] == 12 and result["kendall_tau"] == 1.0
    result.update(a="a", b="b", tolerance=1.0, min_tau=None, passed=False)
    assert "(2 with a NaN reward left out)" in format_report(result)
    result = compare([nan], [1.0], [1])
    result.update(a="a", b="b", tolerance=1.0, min_tau=None, passed=False)
    assert result["max_abs_diff"] is None and "max |a - b|:      n/a" in format_report(result)
    json.dumps(result, allow_nan=False)


def test_kendall_tau_5000_is_fast():
    rng = random.Random(2)
    x = [rng.random() for _ in range(5000)]
    start = time.monotonic()
    assert kendall_tau(x, x) == pytest.approx(1.0)
    assert time.monotonic() - start < 10


# --- hostile lines and inputs that changed between runs ---------------------------------------------


def test_a_deeply_nested_line_exits_2_naming_it_and_keeps_the_lines_before(tmp_path, polar_path, capsys):
    rows = polar_rows(5)
    lines = [json.dumps(r) for r in rows]
    data, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    data.write_text("\n".join(lines[:3] + ["[" * 100_000 + "]" * 100_000] + lines[3:]) + "\n")
    assert main(["score", str(data), "-o", str(out), "--model", polar_path, "--chunk-size", "2"] + QUIET) == 2
    err = capsys.readouterr().err
    assert f"{data} line 4: not valid JSON: JSON nested too deeply" in err and "Traceback" not in err
    assert [r["id"] for r in read_jsonl(out)] == [0, 1, 2]


def test_a_line_with_unencodable_text_exits_2_naming_line_and_field(tmp_path, polar_path, capsys):
    rows = polar_rows(4)
    lines = [json.dumps(r) for r in rows]
    lines[2] = lines[2].replace('"reference": "4"', '"reference": "4\\ud800"')
    assert "ud800" in lines[2]
    data, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    data.write_text("\n".join(lines) + "\n")
    assert main(["score", str(data), "-o", str(out), "--model", polar_path] + QUIET) == 2
    err = capsys.readouterr().err
    assert "line 3, field 'reference': not valid Unicode text" in err and "Traceback" not in err
    assert [r["id"] for r in read_jsonl(out)] == [0, 1]


def test_a_lone_surrogate_in_a_copied_field_is_written_as_valid_json(tmp_path, polar_path):
    rows = polar_rows(2)
    lines = [json.dumps(r) for r in rows]
    lines[1] = lines[1][:-1] + ', "note": "x\\udc80y"}'
    data, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    data.write_text("\n".join(lines) + "\n")
    assert main(["score", str(data), "-o", str(out), "--model", polar_path] + QUIET) == 0
    raw = out.read_bytes()
    raw.decode("utf-8")  # valid UTF-8 ...
    assert read_jsonl(out)[1]["note"] == "x\udc80y"  # ... and the same string back


def test_resume_refuses_an_input_that_changed_since(tmp_path, polar_path, capsys):
    rows = polar_rows(10)
    data, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_jsonl(data, rows[:6])
    argv = ["score", str(data), "-o", str(out), "--model", polar_path, "--chunk-size", "4"] + QUIET
    assert main(argv) == 0
    before = out.read_bytes()
    edited = [dict(r) for r in rows]
    edited[4]["output"] = "an edited answer"
    write_jsonl(data, edited)
    assert main(argv + ["--resume"]) == 2
    err = capsys.readouterr().err
    assert f"--resume: {data} line 5 is not the sample kept as line 5" in err
    assert out.read_bytes() == before  # nothing kept was touched
    write_jsonl(data, rows)  # the same first lines, more after them: resumes
    assert main(argv + ["--resume"]) == 0
    assert [r["id"] for r in read_jsonl(out)] == list(range(10))


def test_chunk_size_and_resume_after_a_bad_line_give_byte_identical_output(tmp_path, polar_path):
    """In-process on CPU each sample has a forward pass of its own: its reward does not depend on its chunk."""
    rows = polar_rows(23)
    for i, r in enumerate(rows):
        r["prompt"] = r["prompt"] + " Think." * (i % 6)  # mixed lengths: padding would move the rewards
    lines = [json.dumps(r) for r in rows]
    data = write_jsonl(tmp_path / "in.jsonl", rows)
    outputs = []
    for size in (1, 5, 64):
        out = tmp_path / f"out-{size}.jsonl"
        assert main(["score", str(data), "-o", str(out), "--model", polar_path, "--chunk-size", str(size)] + QUIET) == 0
        outputs.append(out.read_bytes())
    assert outputs[0] == outputs[1] == outputs[2]
    # a malformed line stops a run mid-chunk; once it is fixed, --resume finishes it byte for byte
    broken, resumed = tmp_path / "broken.jsonl", tmp_path / "resumed.jsonl"
    broken.write_text("\n".join(lines[:9] + ['{"prompt": '] + lines[10:]) + "\n")
    argv = ["score", str(broken), "-o", str(resumed), "--model", polar_path, "--chunk-size", "4"] + QUIET
    assert main(argv) == 2
    broken.write_text("\n".join(lines) + "\n")
    assert main(argv + ["--resume"]) == 0
    assert resumed.read_bytes() == outputs[0]
