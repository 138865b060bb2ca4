"""rmclient: score language-model outputs with reward models on any backend."""

from .client import AsyncRewardModelClient, RewardModelClient
from .errors import (
    ConfigurationError,
    InvalidSampleError,
    LaunchError,
    ResponseError,
    RMClientError,
    ScoringError,
    ServerError,
)
from .recipes import Encoded

__version__ = "0.1.0"
__all__ = [
    "RewardModelClient",
    "AsyncRewardModelClient",
    "ScoringError",
    "Encoded",
    "RMClientError",
    "InvalidSampleError",
    "ConfigurationError",
    "ServerError",
    "ResponseError",
    "LaunchError",
    "__version__",
]
