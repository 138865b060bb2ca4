"""Launch a reward model on lmdeploy (``python -m rmclient.launchers.lmdeploy MODEL [...] [--dry-run]``).

``lmdeploy serve api_server M --backend pytorch --tp T --server-name H --server-port P``
(``cli/serve.py`` ``add_parser_api_server``; ``--trust-remote-code`` from 0.13: ``cli/serve.py`` 0.13.0:84,
as ``rmclient.adapters.lmdeploy.TABLE``'s rows cite). Run as ``python -m lmdeploy serve ...`` so that the
interpreter (and so the environment) is the one given. lmdeploy serves only
InternLM2ForRewardModel and Qwen2ForRewardModel as reward models; its
``/pooling`` returns the raw last-token score.
"""

from __future__ import annotations

import logging
from typing import List, Optional

from rmclient.adapters.lmdeploy import REWARD_ARCHITECTURES, TABLE, LmdeployRow
from rmclient.errors import ConfigurationError

from ._common import EngineSpec, LaunchOptions, ModelKind, Version, add_common, format_version

logger = logging.getLogger("rmclient.launchers.lmdeploy")

NEWEST_KNOWN = "0.18.0"
DISTRIBUTIONS = ("lmdeploy",)
READY_ROUTES = ("/health", "/v1/models")
DEFAULT_PORT = 23333


def engine_args(
    model_path: str, opts: LaunchOptions, version: Version, row: LmdeployRow, arch: Optional[str], kind: str
) -> List[str]:
    """lmdeploy's flags for ``row`` (see ``EngineSpec.build_command``)."""
    if opts.steps:
        raise ConfigurationError("lmdeploy serves no process reward models (one float per sample, every version)")
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

    cmd = ["-m", "lmdeploy", "serve", "api_server", str(model_path)]
    cmd += ["--backend", "pytorch", "--tp", str(opts.tensor_parallel_size)]
    cmd += ["--server-name", opts.host, "--server-port", str(opts.port)]
    add_common(cmd, "--api-keys", opts.api_key)
    if opts.api_key and not row.key_guards_pooling:
        logger.warning(
            "lmdeploy %s checks --api-keys per route and not on /pooling (fixed in 0.12.2): the reward "
            "route stays open to anyone who can reach %s:%s",
            format_version(version), opts.host, opts.port,
        )
    if opts.trust_remote_code:
        if row.trust_remote_code_flag:
            cmd.append("--trust-remote-code")
        else:
            logger.info("lmdeploy %s always trusts remote code (no flag before 0.13)", format_version(version))
    add_common(cmd, "--model-name", opts.served_model_name)
    add_common(cmd, "--session-len", opts.max_model_len)
    add_common(cmd, "--dtype", opts.dtype)
    return cmd


SPEC = EngineSpec("lmdeploy", "lmdeploy", TABLE, engine_args, NEWEST_KNOWN, DISTRIBUTIONS, READY_ROUTES, DEFAULT_PORT)
build_command, flags_for = SPEC.build_command, SPEC.flags_for
#: The version table the launcher reads (the adapter's).
VERSION_TABLE = TABLE

if __name__ == "__main__":  # python -m rmclient.launchers.lmdeploy: the entry point, not a dependency
    from .cli import main

    raise SystemExit(main(engine=SPEC.name))
