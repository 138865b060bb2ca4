"""Launch a reward model on sglang (``python -m rmclient.launchers.sglang MODEL [...] [--dry-run]``).

``python -m sglang.launch_server --model-path M --is-embedding ...`` (shared/ENGINES.md 3).
sglang's ``/classify`` returns the raw score: no flag is needed for that.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import FrozenSet, List, Optional, Sequence, Tuple

from rmclient.errors import ConfigurationError

from ._common import (
    EngineSpec,
    LaunchOptions,
    VersionRow,
    add_common,
    check_architecture,
    format_version,
    python_prefix,
    resolve_version,
    select_row,
)

logger = logging.getLogger("rmclient.launchers.sglang")


@dataclass(frozen=True)
class SglangFlags(VersionRow):
    """Reward-model flags for sglang ``since <= version < until``.

    ``unsupported``: reward architectures this range cannot serve.
    """

    reward_flags: Tuple[str, ...] = ("--is-embedding",)
    unsupported: FrozenSet[str] = frozenset()
    note: str = ""


#: ONE table: sglang version range -> reward-model flags (shared/ENGINES.md 3).
VERSION_TABLE: Tuple[SglangFlags, ...] = (
    SglangFlags(
        since=(0, 4, 3),
        until=(0, 4, 4),
        unsupported=frozenset({"Qwen2ForRewardModel"}),
        note="0.4.3: `--is-embedding`; no Qwen2ForRewardModel yet",
    ),
    SglangFlags(
        since=(0, 4, 4),
        until=(0, 5, 24),
        note="0.4.4 - 0.5.23: `--is-embedding` (optional for the reward architectures it knows, harmless)",
    ),
)

NEWEST_KNOWN = "0.5.23"
DISTRIBUTIONS = ("sglang",)
#: /health answers 503 while the server starts (from 0.4.10), 200 when it is ready.
READY_ROUTES = ("/health",)
DEFAULT_PORT = 30000


def flags_for(version: Sequence[int]) -> SglangFlags:
    return select_row(VERSION_TABLE, tuple(version), "sglang")  # type: ignore[arg-type]


def build_command(
    model_path: str,
    options: Optional[LaunchOptions] = None,
    *,
    engine_version: Optional[str] = None,
    python: Optional[str] = None,
    dry_run: bool = False,
) -> List[str]:
    """The argv that serves ``model_path`` as a reward model on the installed (or given) sglang."""
    opts = options or LaunchOptions(port=DEFAULT_PORT)
    opts.validate()
    version = resolve_version(SPEC, engine_version=engine_version, python=python, dry_run=dry_run)
    row = flags_for(version)
    arch, _kind = check_architecture(opts, model_path)
    if arch in row.unsupported:
        raise ConfigurationError(f"sglang {format_version(version)} cannot serve {arch} ({row.note})")

    cmd = python_prefix(python) + ["-m", "sglang.launch_server", "--model-path", str(model_path)]
    cmd += list(row.reward_flags)
    if opts.trust_remote_code:
        cmd.append("--trust-remote-code")
    cmd += ["--tp-size", str(opts.tensor_parallel_size), "--dp-size", str(opts.data_parallel_size)]
    add_common(cmd, "--mem-fraction-static", opts.mem_fraction_static)
    cmd += ["--host", opts.host, "--port", str(opts.port)]
    add_common(cmd, "--api-key", opts.api_key)
    add_common(cmd, "--served-model-name", opts.served_model_name)
    add_common(cmd, "--context-length", opts.max_model_len)
    add_common(cmd, "--dtype", opts.dtype)
    cmd += list(opts.extra_args)
    return cmd


SPEC = EngineSpec(
    name="sglang",
    distributions=DISTRIBUTIONS,
    ready_routes=READY_ROUTES,
    newest_known=NEWEST_KNOWN,
    build_command=build_command,
)


def main(argv: Optional[List[str]] = None) -> int:
    from .cli import main as cli_main

    return cli_main(argv, engine="sglang")


if __name__ == "__main__":
    raise SystemExit(main())
