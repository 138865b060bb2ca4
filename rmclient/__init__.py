"""rmclient: score language-model outputs with reward models on any backend."""

import logging as _logging

_logging.getLogger(__name__).addHandler(_logging.NullHandler())  # a library logs; the application shows

from .client import AsyncRewardModelClient, RewardModelClient, Scored
from .compose import Member, RewardComposition
from .errors import (
    ClientClosedError,
    ConfigurationError,
    InvalidSampleError,
    LaunchError,
    ResponseError,
    RMClientError,
    ScoringError,
    ServerError,
    ServersUnreachable,
)
from .extras import MissingDependency
from .judge import AsyncJudgeClient, JudgeClient, PairVerdict, Verdict
from .judge_recipes import JudgeRecipe
from .model import Encoder
from .preference import Comparison, Ranking
from .recipes import Encoded
from .scorer import Scorer
from .spans import TokenRewards, spread
from .steps import StepRewards

try:  # the one place the version is written is pyproject.toml
    from importlib.metadata import PackageNotFoundError, version as _version

    __version__ = _version("reward-model-client")
except PackageNotFoundError:  # pragma: no cover - a source tree that was never installed
    __version__ = "0+unknown"
__all__ = [
    "RewardModelClient",
    "AsyncRewardModelClient",
    "JudgeClient",
    "AsyncJudgeClient",
    "JudgeRecipe",
    "Verdict",
    "PairVerdict",
    "ScoringError",
    "ServersUnreachable",
    "ClientClosedError",
    "MissingDependency",
    "Scored",
    "StepRewards",
    "TokenRewards",
    "Comparison",
    "Ranking",
    "spread",
    "Encoded",
    "Encoder",
    "Scorer",
    "Member",
    "RewardComposition",
    "RMClientError",
    "InvalidSampleError",
    "ConfigurationError",
    "ServerError",
    "ResponseError",
    "LaunchError",
    "__version__",
]
