"""Plug rmclient into RL trainers: TRL, verl, ms-swift, and several reward models at once.

* :mod:`rmclient.integrations.trl`: ``make_reward_func(client)`` for ``GRPOTrainer``;
* :mod:`rmclient.integrations.verl`: ``compute_score`` / ``compute_score_batch`` for
  ``custom_reward_function``;
* :mod:`rmclient.integrations.swift_plugin`: an ORM plugin file for ms-swift's
  ``--external_plugins`` (its path is :data:`SWIFT_PLUGIN`);
* :mod:`rmclient.integrations.compose`: :class:`RewardComposition`, several scorers combined.

None of these modules imports its trainer except the ms-swift plugin (which must subclass
ms-swift's ``ORM``).
"""

from __future__ import annotations

import os

from .compose import CompositeScores, Member, RewardComposition, RunningStats
from .trl import make_async_reward_func, make_reward_func
from .verl import make_async_compute_score, make_compute_score, make_compute_score_batch

#: The path to give ms-swift's ``--external_plugins``.
SWIFT_PLUGIN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "swift_plugin.py")

__all__ = [
    "RewardComposition",
    "Member",
    "CompositeScores",
    "RunningStats",
    "make_reward_func",
    "make_async_reward_func",
    "make_compute_score",
    "make_async_compute_score",
    "make_compute_score_batch",
    "SWIFT_PLUGIN",
]
