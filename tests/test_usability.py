"""What a new user meets: help for every flag, the version, logging like a library, missing extras named,
clear errors, truncation that shows, progress, the API key from the environment, a readable repr."""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from rmclient import RewardModelClient, ScoringError, ServerError
from rmclient.cli import build_parser, main
from rmclient.errors import ConfigurationError, InvalidSampleError, ServersUnreachable
from tests.fake_engine import FakeEngine, reward_of

QUIET = ["--no-progress"]


def _parsers(parser, path=("rmclient",)):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, path + (name,))


def test_every_flag_of_every_command_has_help_and_every_command_a_description_and_examples():
    for path, parser in _parsers(build_parser()):
        for action in parser._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction, argparse._VersionAction)):
                continue
            assert action.help, (" ".join(path), action.option_strings or action.dest)
        if len(path) > 1:
            assert parser.description and parser.epilog and "example" in parser.epilog, " ".join(path)
            assert ".. " not in parser.description and "``" not in parser.description  # plain text, not reST


def test_version_comes_from_the_package_metadata(capsys):
    import importlib.metadata as md

    import rmclient

    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"rmclient {md.version('reward-model-client')}" == f"rmclient {rmclient.__version__}"


def test_the_library_logs_through_a_null_handler_only():
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent("""
            import logging, sys
            import rmclient
            logging.getLogger("rmclient.pool").warning("a warning from the library")
            print(any(isinstance(h, logging.NullHandler) for h in logging.getLogger("rmclient").handlers))
        """)], capture_output=True, text=True, timeout=120, check=True,
    )
    assert out.stdout.strip() == "True" and "a warning from the library" not in out.stderr


def test_log_level_anywhere_on_the_line_and_from_the_environment(tmp_path, polar_path, monkeypatch):
    data = tmp_path / "in.jsonl"
    data.write_text(json.dumps({"prompt": "p", "reference": "r", "output": "o"}) + "\n")
    argv = ["score", str(data), "-o", str(tmp_path / "out.jsonl"), "--model", polar_path] + QUIET
    for extra, env, level in ([["-v"], None, logging.INFO], [["--log-level", "debug"], None, logging.DEBUG],
                              [[], "error", logging.ERROR], [[], None, logging.WARNING]):
        if env:
            monkeypatch.setenv("RMCLIENT_LOG_LEVEL", env)
        else:
            monkeypatch.delenv("RMCLIENT_LOG_LEVEL", raising=False)
        assert main(argv + extra) == 0  # after the command: accepted
        assert logging.getLogger().level == level
    monkeypatch.setenv("RMCLIENT_LOG_LEVEL", "error")
    assert main(["-v"] + argv) == 0 and logging.getLogger().level == logging.INFO  # an option beats the env

    import rmclient.serve

    seen = []
    monkeypatch.setattr(rmclient.serve, "run_serve", lambda args: seen.append(args.log_level) or 0)
    for argv, env in ([["--log-level", "debug", "serve", polar_path], None], [["serve", polar_path], "error"],
                      [["serve", polar_path], None], [["-v", "serve", polar_path], "error"],
                      [["serve", polar_path, "--log-level", "critical"], None]):
        if env:
            monkeypatch.setenv("RMCLIENT_LOG_LEVEL", env)
        else:
            monkeypatch.delenv("RMCLIENT_LOG_LEVEL", raising=False)
        assert main(argv) == 0
    assert seen == ["debug", "error", "info", "info", "critical"]
    proc = subprocess.run([sys.executable, "-m", "rmclient", "-v", "score", str(data), "-o", str(tmp_path / "o2.jsonl"),
                           "--model", polar_path, "--no-progress"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0
    assert any(line[:4].isdigit() and " INFO " in line for line in proc.stderr.splitlines())  # timestamped


def test_a_missing_extra_is_one_line_naming_it(polar_path, monkeypatch, capsys, tmp_path):
    from rmclient.extras import MissingDependency, require

    monkeypatch.setitem(sys.modules, "aiohttp", None)
    with pytest.raises(MissingDependency, match=r"rmclient serve needs aiohttp, which is not installed: "
                                                r"pip install 'reward-model-client\[serve\]'"):
        require("aiohttp", "serve", "rmclient serve")
    assert main(["serve", polar_path, "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert "pip install 'reward-model-client[serve]'" in err and "Traceback" not in err
    monkeypatch.delitem(sys.modules, "aiohttp")
    monkeypatch.setitem(sys.modules, "torch", None)  # aiohttp there, torch not: still one line
    assert main(["serve", polar_path, "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert "rmclient serve needs torch, which is not installed: pip install 'reward-model-client[serve]'" in err
    assert "Traceback" not in err
    # installed but broken is not "not installed": the real error
    (tmp_path / "broken_extra.py").write_text("import no_such_library_below_it\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ImportError, match="no_such_library_below_it") as info:
        require("broken_extra", "plot", "--plot")
    assert not isinstance(info.value, MissingDependency)
    # torch missing for in-process scoring: tests/test_client_venv.py, in a venv without torch


def test_clear_errors_for_a_wrong_model_path_and_a_misnamed_field(tmp_path, polar_path):
    with pytest.raises(ConfigurationError, match="no such folder: /no/such/model"):
        RewardModelClient("/no/such/model")
    client = RewardModelClient(polar_path)
    with pytest.raises(InvalidSampleError, match=r"field 'output': missing \(the sample has 'response': did you mean 'output'\?\)"):
        client({"prompt": "p", "reference": "r", "response": "o"})


def test_every_server_unreachable_is_a_server_error_naming_the_addresses(polar_path):
    with FakeEngine("vllm", "0.32.0") as a, FakeEngine("vllm", "0.32.0") as b:
        urls = [a.url, b.url]
    client = RewardModelClient(polar_path, server_type="vllm", server_address=urls, max_attempts=2, deadline=10)
    with pytest.raises(ServersUnreachable) as err:
        client([{"prompt": "p", "reference": "r", "output": "o"}] * 3)
    assert isinstance(err.value, ServerError) and isinstance(err.value, ScoringError)
    assert all(u in str(err.value) for u in urls) and "no server could be reached" in str(err.value)
    assert sorted(err.value.failures) == [0, 1, 2]
    client.close()


def test_api_key_from_the_environment_and_a_readable_repr(polar_path, monkeypatch):
    monkeypatch.setenv("RMCLIENT_API_KEY", "from-env")
    with FakeEngine("vllm", "0.32.0") as fake:
        client = RewardModelClient(polar_path, server_type="vllm", server_address=fake.url)
        client({"prompt": "p", "reference": "r", "output": "o"})
        assert fake.requests[0]["body"]["_auth"] == "Bearer from-env"
        assert repr(client) == (f"RewardModelClient({polar_path!r}, server_type='vllm', at={fake.url!r}, "
                                "recipe='auto', max_length=16384)")
        client.close()
    assert "in-process" in repr(RewardModelClient(polar_path))


def test_progress_in_python_as_a_callback_and_a_bar(polar_path, capsys):
    samples = [{"prompt": f"q{i}", "reference": "r", "output": f"o{i}"} for i in range(40)]
    seen = []
    local = RewardModelClient(polar_path, batch_size=8)
    rewards = local(samples, progress=lambda done, total: seen.append((done, total)))
    assert len(rewards) == 40 and seen[-1] == (40, 40) and len(seen) >= 5  # one call per forward pass
    with FakeEngine("vllm", "0.32.0") as fake:
        remote = RewardModelClient(polar_path, server_type="vllm", server_address=fake.url, batch_size=8)
        seen.clear()
        assert remote(samples, progress=lambda d, t: seen.append(d)) == [reward_of(x) for x in remote.encode_ids(samples)]
        steps = [b - a for a, b in zip([0] + seen, seen)]
        scoring = [r for r in fake.requests if r["path"] == "/pooling"]
        assert len(seen) == len(scoring) >= 5 and all(s > 0 for s in steps)  # one call per request
        assert sorted(steps) == sorted(len(r["body"]["input"]) for r in scoring) and seen[-1] == 40
        remote(samples, progress=True)
        assert "scoring" in capsys.readouterr().err
        remote.close()


def test_truncation_shows(tmp_path, polar_path, caplog, capsys):
    long = {"prompt": "word " * 3000, "reference": "r", "output": "o"}
    short = {"prompt": "p", "reference": "r", "output": "o"}
    client = RewardModelClient(polar_path, max_length=512)
    with caplog.at_level(logging.WARNING, logger="rmclient.client"):
        details = client.score_details([short, long])
        assert caplog.text == ""  # the details say it
        client([short, long])
    assert [d.truncated for d in details] == [False, True] and 500 < details[1].num_tokens <= 512
    assert "1 of 2 samples were cut to fit: at most 512 tokens (the smallest of max_length" in caplog.text
    # POLAR's response budget cuts too, and says so
    caplog.clear()
    budget = RewardModelClient(polar_path, max_length=512, max_response_length=16)
    wordy = {"prompt": "p", "reference": "r", "output": "word " * 50}
    with caplog.at_level(logging.WARNING, logger="rmclient.client"):
        budget([short, wordy])
    assert "1 of 2 samples were cut to fit" in caplog.text
    assert "at most 16 tokens of the reference and of the output (POLAR)" in caplog.text
    assert [d.truncated for d in budget.score_details([short, wordy])] == [False, True]
    data = tmp_path / "in.jsonl"
    data.write_text(json.dumps(short) + "\n" + json.dumps(long) + "\n")
    out = tmp_path / "out.jsonl"
    assert main(["score", str(data), "-o", str(out), "--model", polar_path, "--max-length", "512", "--with-tokens"]
                + QUIET) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["truncated"] for r in rows] == [False, True] and rows[1]["num_tokens"] == details[1].num_tokens
    err = capsys.readouterr().err
    assert "warning: 1 lines had samples cut to fit, by the recipe's rule: at most 512 tokens" in err
    assert err.count("cut to fit") == 1 and "lines 2" in err


def test_parity_encodes_both_sides_at_the_smaller_length(tmp_path, polar_path, capsys):
    from rmclient.serve import RewardServer, ServerThread

    rows = [{"prompt": "word " * 3000, "reference": "r", "output": "o"}, {"prompt": "p", "reference": "r", "output": "o"}]
    data = tmp_path / "in.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with ServerThread(RewardServer(polar_path, max_model_len=1024)) as srv:  # in-process: 4096 (the model's)
        code = main(["parity", str(data), "--model", polar_path, "--a", "transformers",
                     "--b", f"sglang@{srv.url}", "--tolerance", "1e-3"] + QUIET)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "both backends encode at most 1024 tokens" in captured.err and "lines 1" in captured.err


def test_launch_failure_quotes_the_first_error_of_the_log(tmp_path):
    from rmclient.errors import LaunchError
    from rmclient.launchers import spawn

    script = tmp_path / "engine.py"
    script.write_text(textwrap.dedent("""
        import sys
        print("INFO starting")
        print("ValueError: Available memory on node 0 (1.0 GiB) is less than desired (4.0 GiB)")
        for i in range(200):
            print(f"INFO cleaning up {i}")
        sys.exit(3)
    """))
    with pytest.raises(LaunchError) as err:
        spawn([sys.executable, str(script)], port=1, ready_timeout=30, log_path=tmp_path / "engine.log")
    text = str(err.value)
    assert "first error in the log: ValueError: Available memory on node 0" in text
    assert "exited with code 3" in text


def test_each_optional_import_is_in_the_extra_its_message_names():
    """`require("mod", "extra", ...)` promises `pip install 'reward-model-client[extra]'` brings mod."""
    import re
    from importlib.metadata import requires

    from packaging.requirements import Requirement

    by_extra: dict = {}
    for line in requires("reward-model-client") or []:
        req = Requirement(line)
        for extra in ("transformers", "serve", "plot", "ray", "all"):
            if req.marker is not None and req.marker.evaluate({"extra": extra}):
                by_extra.setdefault(extra, set()).add(req.name.replace("-", "_").lower())
    root = Path(__file__).resolve().parent.parent
    calls = set()
    for path in list((root / "rmclient").rglob("*.py")) + list((root / "launchers").rglob("*.py")):
        calls |= set(re.findall(r"""\brequire\(\s*["']([\w.]+)["']\s*,\s*["'](\w+)["']""", path.read_text()))
    assert {m for m, _ in calls} == {"torch", "aiohttp", "prometheus_client", "matplotlib", "ray"}
    for module, extra in calls:
        assert module.split(".")[0] in by_extra[extra], (module, extra)
        assert module.split(".")[0] in by_extra["all"], module
    assert {"torch", "aiohttp", "prometheus_client"} <= by_extra["serve"]  # `rmclient serve` needs all three
    base = {Requirement(r).name for r in requires("reward-model-client") if "extra ==" not in r}
    assert "torch" not in base and "transformers" in base
