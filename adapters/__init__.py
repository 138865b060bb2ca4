"""Engine adapters, one module per engine: pure request builders and response parsers (the client half)
and, for the protocols ``rmclient serve`` speaks, the server half too."""

from __future__ import annotations

from typing import Any, Dict, Optional, Type

from rmclient.errors import ConfigurationError

from .base import Adapter, EncodedInput, Request, ServerInfo, check_rewards, model_kind, split_inputs
from .versions import Version, VersionRow, engine_version, parse_version
from .lmdeploy import LmdeployAdapter
from .openai import OpenaiAdapter
from .openrlhf import OpenrlhfAdapter
from .rmclient import RmclientAdapter
from .sglang import SglangAdapter
from .vllm import VllmAdapter

#: Adapter class of each ``server_type``.
ADAPTERS: Dict[str, Type[Adapter]] = {
    "sglang": SglangAdapter,
    "vllm": VllmAdapter,
    "lmdeploy": LmdeployAdapter,
    "openrlhf": OpenrlhfAdapter,
    "openai": OpenaiAdapter,  # any OpenAI-compatible chat-completions server: an LLM judge
    "rmclient": RmclientAdapter,  # our own server, `rmclient serve`
}


def get_adapter(server_type: str, version: Optional[str] = None, **kw: Any) -> Adapter:
    """The adapter for ``server_type`` at ``version`` (``None``: unknown); ``kw`` go to its constructor."""
    try:
        cls = ADAPTERS[server_type.lower()]
    except (KeyError, AttributeError):
        raise ConfigurationError(
            f"unknown server_type {server_type!r}; valid: {', '.join(sorted(ADAPTERS))}"
        ) from None
    return cls(version, **kw)


__all__ = [
    "ADAPTERS", "Adapter", "EncodedInput", "LmdeployAdapter", "OpenaiAdapter", "OpenrlhfAdapter", "Request", "RmclientAdapter",
    "SglangAdapter", "ServerInfo", "Version", "VersionRow", "VllmAdapter", "check_rewards", "engine_version", "get_adapter",
    "model_kind", "parse_version", "split_inputs",
]
