"""The one registry of backends: every ``server_type`` the client takes and every engine ``rmclient launch`` starts.

Pure data (imports nothing of rmclient but its errors): the client, the adapters'
registry, the launchers and the CLI all read it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Tuple

from .errors import ConfigurationError


@dataclass(frozen=True)
class Engine:
    """One backend: its ``server_type``, what it is, and where its adapter and launcher live."""

    name: str
    description: str
    #: Module of ``rmclient.adapters`` that speaks its protocol (``None``: in-process, no protocol).
    adapter: Optional[str]
    #: Module of ``rmclient.launchers`` that starts it (``None``: we cannot start it).
    launcher: Optional[str]
    #: Other names ``rmclient launch`` accepts for it.
    aliases: Tuple[str, ...] = ()


ENGINES: Dict[str, Engine] = {
    e.name: e
    for e in (
        Engine("transformers", "in-process: the model runs in this Python process (no server)", None, None),
        Engine("sglang", "an sglang server (POST /classify)", "sglang", "sglang"),
        Engine("vllm", "a vLLM server (POST /pooling or /classify)", "vllm", "vllm"),
        Engine("lmdeploy", "an lmdeploy server (POST /pooling)", "lmdeploy", "lmdeploy"),
        Engine("openrlhf", "OpenRLHF's serve_rm (POST /get_reward, whole texts)", "openrlhf", None),
        Engine("openai", "an LLM judge: any OpenAI-compatible server (POST /v1/chat/completions)", "openai", None),
        Engine("rmclient", "our own server, `rmclient serve` (exact token ids)", "rmclient", "rmclient",
               aliases=("transformers",)),
    )
}
#: Every ``server_type`` of the client, in-process first.
SERVER_TYPES: Tuple[str, ...] = tuple(ENGINES)
#: The backends that are servers (have an adapter).
SERVERS: Tuple[str, ...] = tuple(n for n, e in ENGINES.items() if e.adapter is not None)
#: The engines ``rmclient launch`` starts, by the names it accepts (aliases included).
LAUNCHABLE: Dict[str, Engine] = {
    **{n: e for n, e in ENGINES.items() if e.launcher is not None},
    **{a: e for e in ENGINES.values() if e.launcher is not None for a in e.aliases},
}


def server_type(name: str) -> Engine:
    """The backend called ``name`` (a client ``server_type``), or a :class:`ConfigurationError` listing them."""
    engine = ENGINES.get(str(name).lower())
    if engine is None:
        raise ConfigurationError(f"unknown server_type {name!r}; choose one of {SERVER_TYPES}")
    return engine


def launchable(name: str) -> Engine:
    """The engine ``rmclient launch NAME`` starts (``transformers`` is our own server's alias)."""
    engine = LAUNCHABLE.get(str(name).lower())
    if engine is None:
        raise ConfigurationError(f"unknown engine {name!r}; choose one of {', '.join(LAUNCHABLE)}")
    return engine
