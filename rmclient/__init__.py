"""rmclient: score language-model outputs with reward models on any backend."""

from .client import RewardModelClient
from .errors import (
    ConfigurationError,
    InvalidSampleError,
    LaunchError,
    ResponseError,
    RMClientError,
    ServerError,
)
from .recipes import Encoded

__version__ = "0.1.0"
__all__ = [
    "RewardModelClient",
    "Encoded",
    "RMClientError",
    "InvalidSampleError",
    "ConfigurationError",
    "ServerError",
    "ResponseError",
    "LaunchError",
    "__version__",
]
