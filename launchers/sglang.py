"""Launch a reward model on sglang (``python -m rmclient.launchers.sglang MODEL [...] [--dry-run]``).

``python -m sglang.launch_server --model-path M --is-embedding ...`` (the flags: ``srt/server_args.py``
0.4.3 to 0.5.13, its dataclass fields from 0.5.14, ``srt/arg_groups/fields/*.py`` from 0.5.20; the
architectures per version: ``rmclient.adapters.sglang.TABLE``, each row's ``source``).
sglang's ``/classify`` returns the raw score: no flag is needed for that.
"""

from __future__ import annotations

import logging
from typing import List, Optional

from rmclient.adapters.base import model_kind
from rmclient.adapters.sglang import KNOWN, TABLE, SglangRow, bias_warning, first_version_serving, supports
from rmclient.errors import ConfigurationError

from ._common import EngineSpec, LaunchOptions, Version, add_common, format_version

logger = logging.getLogger("rmclient.launchers.sglang")


#: sglang's flags are the same in every version (srt/server_args.py 0.4.3 to 0.5.13; dataclass fields
#: from 0.5.14, srt/arg_groups/fields/*.py from 0.5.20): `--is-embedding` is needed for architectures
#: missing from `is_generation_model`'s list (Gemma2 seq-cls before 0.5.9) and harmless otherwise.
REWARD_FLAGS = ("--is-embedding",)

NEWEST_KNOWN = "0.5.23"
DISTRIBUTIONS = ("sglang",)
#: The port opens only after the model is loaded; /health then answers 503 until the warm-up
#: request is done (0.5.1+); before 0.5.1 it is 200 at once, so /get_model_info is asked too.
READY_ROUTES = ("/health", "/get_model_info")
DEFAULT_PORT = 30000


def engine_args(
    model_path: str, opts: LaunchOptions, version: Version, row: SglangRow, arch: Optional[str], kind: str
) -> List[str]:
    """sglang's flags for ``row`` (see ``EngineSpec.build_command``)."""
    if opts.steps:
        raise ConfigurationError("sglang serves no process reward models (LAST pooling only, every release)")
    if not supports(row, arch):
        since = first_version_serving(arch)
        raise ConfigurationError(
            f"sglang {format_version(version)} does not serve {arch} as a reward model"
            + (f"; it does from {since}" if since else "")
        )
    warning = bias_warning(arch)
    if warning:
        logger.warning(warning)
    elif arch not in KNOWN and model_kind(arch) in ("seq_cls", "reward"):
        logger.warning("rmclient has not checked that sglang returns the raw reward of %s", arch)
    cmd = ["-m", "sglang.launch_server", "--model-path", str(model_path)]
    cmd += list(REWARD_FLAGS)
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


SPEC = EngineSpec("sglang", "sglang", TABLE, engine_args, NEWEST_KNOWN, DISTRIBUTIONS, READY_ROUTES, DEFAULT_PORT)
build_command, flags_for = SPEC.build_command, SPEC.flags_for
#: The version table the launcher reads (the adapter's).
VERSION_TABLE = TABLE

if __name__ == "__main__":  # python -m rmclient.launchers.sglang: the entry point, not a dependency
    from .cli import main

    raise SystemExit(main(engine=SPEC.name))
