"""What ``rmclient serve`` needs beyond the base install."""

from __future__ import annotations


def require_serve() -> None:
    """What ``rmclient serve`` imports beyond the base install, or a one-line ``MissingDependency``."""
    from ..extras import require

    require("aiohttp", "serve", "rmclient serve")
    require("prometheus_client", "serve", "rmclient serve")
    require("torch", "serve", "rmclient serve")
