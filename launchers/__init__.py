"""Start sglang, vLLM, lmdeploy or ``rmclient serve`` serving a reward model, with the flags of the
installed version.

    from rmclient.launchers import launch
    with launch("vllm", "/models/rm", python="/path/to/vllm-venv/bin/python") as server:
        ...  # server.url

Each engine module (``sglang``, ``vllm``, ``lmdeploy``, ``rmclient``) holds its version table
and ``build_command``; which names start which module is ``rmclient.engines``'s registry
(``transformers`` is ``rmclient``'s alias); ``supervisor`` starts, watches and stops the process;
``cli`` is the shared command line (``python -m rmclient.launchers.vllm --help``). Only ``cli``
and the engine modules' ``__main__`` blocks import ``cli``.
"""

from rmclient.errors import LaunchError

from ._common import LaunchOptions, parse_version, read_architecture
from .supervisor import ENGINES, Server, build_launch_command, free_port, get_engine, launch, spawn, start

__all__ = [
    "ENGINES",
    "LaunchError",
    "LaunchOptions",
    "Server",
    "build_launch_command",
    "free_port",
    "get_engine",
    "launch",
    "parse_version",
    "read_architecture",
    "spawn",
    "start",
]
