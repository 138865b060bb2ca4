"""Launch ``rmclient serve``, our own reward server (transformers over HTTP), like an engine.

    rmclient launch rmclient MODEL [--port 8000] [--api-key KEY] [-- --max-wait-ms 10]
    rmclient launch transformers MODEL ...      # the same: ``transformers`` is its alias
    python -m rmclient.launchers.rmclient MODEL --dry-run

It runs ``python -m rmclient.serve MODEL --host H --port P ...`` under the same
supervisor as sglang, vLLM and lmdeploy (own process group, log file, ready
when ``/health`` answers 200, whole group stopped on exit). The "engine
version" is rmclient's own (distribution ``reward-model-client``); ``python=``
must be an interpreter where rmclient and transformers are installed.
Arguments after ``--`` go to ``rmclient serve`` (``--max-batch-size``,
``--max-wait-ms``, ``--insecure`` ...). The API key reaches the server in
``RMCLIENT_API_KEY``, never in its argv.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import List, Optional, Tuple

from rmclient.errors import ConfigurationError

from ._common import EngineSpec, LaunchOptions, Version, VersionRow, add_common

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServeFlags(VersionRow):
    """``rmclient serve`` flags for rmclient ``since <= version < until``."""

    note: str = ""


#: ONE table: rmclient version range -> serve flags. Every version so far takes the same flags.
VERSION_TABLE: Tuple[ServeFlags, ...] = (
    ServeFlags(min_version="0.0.1", max_version=None, note="python -m rmclient.serve MODEL --host H --port P"),
)

NEWEST_KNOWN = "0.2.0"
DISTRIBUTIONS = ("reward-model-client",)
#: The model is loaded before the port is bound: /health answers only once it can score.
READY_ROUTES = ("/health",)
DEFAULT_PORT = 8000


def engine_args(
    model_path: str, opts: LaunchOptions, version: Version, row: ServeFlags, arch: Optional[str], kind: str
) -> List[str]:
    """``rmclient serve``'s flags (see ``EngineSpec.build_command``)."""
    if opts.tensor_parallel_size != 1 or opts.data_parallel_size != 1:
        raise ConfigurationError(
            "rmclient serve runs one model in one process: tensor/data parallel sizes must be 1 "
            "(start several servers and give the client all their addresses)"
        )
    if opts.mem_fraction_static is not None:
        logger.warning("mem_fraction_static is an sglang option; rmclient serve ignores it")
    cmd = ["-m", "rmclient.serve", str(model_path), "--host", opts.host, "--port", str(opts.port)]
    if opts.trust_remote_code:
        cmd.append("--trust-remote-code")
    add_common(cmd, "--served-model-name", opts.served_model_name)
    add_common(cmd, "--max-model-len", opts.max_model_len)
    add_common(cmd, "--dtype", opts.dtype)
    add_common(cmd, "--steps", opts.steps)
    return cmd


SPEC = EngineSpec(
    "rmclient",
    "rmclient serve",
    VERSION_TABLE,
    engine_args,
    NEWEST_KNOWN,
    DISTRIBUTIONS,
    READY_ROUTES,
    DEFAULT_PORT,
    api_key_env="RMCLIENT_API_KEY",  # rmclient serve reads it; argv would show the key in `ps`
)
build_command, flags_for = SPEC.build_command, SPEC.flags_for

if __name__ == "__main__":  # python -m rmclient.launchers.rmclient: the entry point, not a dependency
    from .cli import main

    raise SystemExit(main(engine=SPEC.name))
