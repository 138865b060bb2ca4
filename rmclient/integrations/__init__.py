"""Plug rmclient into RL trainers: TRL, verl, ms-swift (and OpenRLHF, see ``examples/``).

* :mod:`rmclient.integrations.trl`: ``make_reward_func(client)`` for ``GRPOTrainer``;
* :mod:`rmclient.integrations.verl`: ``compute_score`` / ``compute_score_batch`` for
  ``custom_reward_function``;
* :mod:`rmclient.integrations.swift_plugin`: an ORM plugin file for ms-swift's
  ``--external_plugins`` (its path is :data:`SWIFT_PLUGIN`).

Several scorers combined (:class:`~rmclient.compose.RewardComposition`) are not an integration: see
:mod:`rmclient.compose`.

None of these modules imports its trainer except the ms-swift plugin (which must subclass
ms-swift's ``ORM``). The hooks sit above the client (verl's and ms-swift's build one from
settings); their functions load on first access, so that ``import rmclient.integrations.trl``
(``client.as_reward_func``) loads nothing else.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

#: The path to give ms-swift's ``--external_plugins``.
SWIFT_PLUGIN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "swift_plugin.py")

__all__ = [
    "make_reward_func",
    "make_async_reward_func",
    "make_compute_score",
    "make_async_compute_score",
    "make_compute_score_batch",
    "SWIFT_PLUGIN",
]

_LAZY = {
    "make_reward_func": "trl", "make_async_reward_func": "trl",
    "make_compute_score": "verl", "make_async_compute_score": "verl", "make_compute_score_batch": "verl",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
