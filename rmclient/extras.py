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
        missing = getattr(exc, "name", None) or top
        raise MissingDependency(
            f"{what} needs {missing}, which is not installed: pip install '{DISTRIBUTION}[{extra}]'"
        ) from None
