"""Launch a reward model on lmdeploy (``python -m rmclient.launchers.lmdeploy MODEL [...] [--dry-run]``).

``lmdeploy serve api_server M --backend pytorch --tp T --server-name H --server-port P``
(shared/ENGINES.md 5). Run as ``python -m lmdeploy serve ...`` so that the
interpreter (and so the environment) is the one given. lmdeploy serves only
InternLM2ForRewardModel and Qwen2ForRewardModel as reward models; its
``/pooling`` returns the raw last-token score.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import FrozenSet, List, Optional, Sequence, Tuple

from rmclient.errors import ConfigurationError

from ._common import (
    EngineSpec,
    LaunchOptions,
    ModelKind,
    VersionRow,
    add_common,
    check_architecture,
    format_version,
    python_prefix,
    resolve_version,
    select_row,
)

logger = logging.getLogger("rmclient.launchers.lmdeploy")

REWARD_ARCHITECTURES: FrozenSet[str] = frozenset({"InternLM2ForRewardModel", "Qwen2ForRewardModel"})


@dataclass(frozen=True)
class LmdeployFlags(VersionRow):
    """Reward-model flags for lmdeploy ``since <= version < until``.

    ``trust_remote_code_flag``: whether ``--trust-remote-code`` exists (before
    0.13 remote code is always trusted and the flag is unknown).
    """

    trust_remote_code_flag: bool = False
    note: str = ""


#: ONE table: lmdeploy version range -> reward-model flags (shared/ENGINES.md 5).
VERSION_TABLE: Tuple[LmdeployFlags, ...] = (
    LmdeployFlags(
        since=(0, 9, 1),
        until=(0, 13, 0),
        trust_remote_code_flag=False,
        note="0.9.1 - 0.12.x: /pooling exists; remote code always trusted, no --trust-remote-code flag",
    ),
    LmdeployFlags(
        since=(0, 13, 0),
        until=(0, 19, 0),
        trust_remote_code_flag=True,
        note="0.13 - 0.18: `--trust-remote-code` (default off); flags checked against 0.18.0's CLI source",
    ),
)

NEWEST_KNOWN = "0.18.0"
DISTRIBUTIONS = ("lmdeploy",)
READY_ROUTES = ("/health", "/v1/models")
DEFAULT_PORT = 23333


def flags_for(version: Sequence[int]) -> LmdeployFlags:
    return select_row(VERSION_TABLE, tuple(version), "lmdeploy")  # type: ignore[arg-type]


def build_command(
    model_path: str,
    options: Optional[LaunchOptions] = None,
    *,
    engine_version: Optional[str] = None,
    python: Optional[str] = None,
    dry_run: bool = False,
) -> List[str]:
    """The argv that serves ``model_path`` as a reward model on the installed (or given) lmdeploy."""
    opts = options or LaunchOptions(port=DEFAULT_PORT)
    opts.validate()
    version = resolve_version(SPEC, engine_version=engine_version, python=python, dry_run=dry_run)
    row = flags_for(version)
    arch, kind = check_architecture(opts, model_path)
    if kind != ModelKind.UNKNOWN and arch not in REWARD_ARCHITECTURES:
        raise ConfigurationError(
            f"lmdeploy serves only {sorted(REWARD_ARCHITECTURES)} as reward models, not {arch}"
        )
    if opts.data_parallel_size > 1:
        raise ConfigurationError(
            "lmdeploy's --dp is for MoE models only: start one server per replica and "
            "balance them on the client"
        )
    if opts.mem_fraction_static is not None:
        raise ConfigurationError("mem_fraction_static is an sglang option (lmdeploy: --cache-max-entry-count)")

    cmd = python_prefix(python) + ["-m", "lmdeploy", "serve", "api_server", str(model_path)]
    cmd += ["--backend", "pytorch", "--tp", str(opts.tensor_parallel_size)]
    cmd += ["--server-name", opts.host, "--server-port", str(opts.port)]
    add_common(cmd, "--api-keys", opts.api_key)
    if opts.trust_remote_code:
        if row.trust_remote_code_flag:
            cmd.append("--trust-remote-code")
        else:
            logger.info("lmdeploy %s always trusts remote code (no flag before 0.13)", format_version(version))
    add_common(cmd, "--model-name", opts.served_model_name)
    add_common(cmd, "--session-len", opts.max_model_len)
    add_common(cmd, "--dtype", opts.dtype)
    cmd += list(opts.extra_args)
    return cmd


SPEC = EngineSpec(
    name="lmdeploy",
    distributions=DISTRIBUTIONS,
    ready_routes=READY_ROUTES,
    newest_known=NEWEST_KNOWN,
    build_command=build_command,
)


def main(argv: Optional[List[str]] = None) -> int:
    from .cli import main as cli_main

    return cli_main(argv, engine="lmdeploy")


if __name__ == "__main__":
    raise SystemExit(main())
