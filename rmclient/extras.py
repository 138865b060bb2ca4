"""Optional dependencies: a missing one is a one-line error naming the extra that brings it."""

from __future__ import annotations

import importlib
from types import ModuleType

from .errors import ConfigurationError

DISTRIBUTION = "reward-model-client"


class MissingDependency(ConfigurationError):
    """An optional dependency is not installed; the message says which extra installs it."""


def require(module: str, extra: str, what: str) -> ModuleType:
    """``import module``, or :class:`MissingDependency`: ``"WHAT needs X: pip install 'reward-model-client[EXTRA]'"``."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        top = module.split(".")[0]
        if exc.name not in (module, top):  # installed but broken (a missing library, a bad build): itself
            raise
        raise MissingDependency(
            f"{what} needs {top}, which is not installed: pip install '{DISTRIBUTION}[{extra}]'"
        ) from None
