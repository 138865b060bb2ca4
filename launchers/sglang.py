"""Launch a reward model on sglang (``python -m rmclient.launchers.sglang MODEL [...] [--dry-run]``).

``python -m sglang.launch_server --model-path M --is-embedding ...`` (shared/ENGINES.md 3).
sglang's ``/classify`` returns the raw score: no flag is needed for that.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import FrozenSet, List, Optional, Tuple

from rmclient.errors import ConfigurationError

from ._common import EngineSpec, LaunchOptions, Version, VersionRow, add_common, format_version

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
        min_version="0.4.3",
        max_version="0.4.4",
        unsupported=frozenset({"Qwen2ForRewardModel"}),
        note="0.4.3: `--is-embedding`; no Qwen2ForRewardModel yet",
    ),
    SglangFlags(
        min_version="0.4.4",
        max_version="0.5.24",
        note="0.4.4 - 0.5.23: `--is-embedding` (optional for the reward architectures it knows, harmless)",
    ),
)

NEWEST_KNOWN = "0.5.23"
DISTRIBUTIONS = ("sglang",)
#: /health answers 503 while the server starts (from 0.4.10), 200 when it is ready.
READY_ROUTES = ("/health",)
DEFAULT_PORT = 30000


def engine_args(
    model_path: str, opts: LaunchOptions, version: Version, row: SglangFlags, arch: Optional[str], kind: str
) -> List[str]:
    """sglang's flags for ``row`` (see ``EngineSpec.build_command``)."""
    if arch in row.unsupported:
        raise ConfigurationError(f"sglang {format_version(version)} cannot serve {arch} ({row.note})")
    cmd = ["-m", "sglang.launch_server", "--model-path", str(model_path)]
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
    return cmd


SPEC = EngineSpec(
    "sglang", "sglang", VERSION_TABLE, engine_args, NEWEST_KNOWN, DISTRIBUTIONS, READY_ROUTES, DEFAULT_PORT
)
build_command, flags_for, main = SPEC.build_command, SPEC.flags_for, SPEC.main

if __name__ == "__main__":
    raise SystemExit(main())
