"""Start sglang, vLLM or lmdeploy serving a reward model, with the flags of the installed version.

    from rmclient.launchers import launch
    with launch("vllm", "/models/rm", python="/path/to/vllm-venv/bin/python") as server:
        ...  # server.url

Each engine module (``sglang``, ``vllm``, ``lmdeploy``) holds its version table
and ``build_command``; ``supervisor`` starts, watches and stops the process;
``cli`` is the shared command line (``python -m rmclient.launchers.vllm --help``).
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
