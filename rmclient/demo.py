"""The README's main job: score the POLAR README's examples and rank them."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Dict, List, Tuple

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "internlm/POLAR-7B"

#: The POLAR README's example: two outputs judged against the reference "Beijing.".
EXAMPLES: List[Dict[str, Any]] = [
    {
        "prompt": [{"role": "user", "content": "What is the capital of China?"}],
        "reference": [{"role": "assistant", "content": "Beijing."}],
        "output": [{"role": "assistant", "content": "Beijing."}],
    },
    {
        "prompt": [{"role": "user", "content": "What is the capital of China?"}],
        "reference": [{"role": "assistant", "content": "Beijing."}],
        "output": [{"role": "assistant", "content": "Shanghai."}],
    },
]
#: Rewards published for internlm/POLAR-7B on EXAMPLES.
PUBLISHED = {"internlm/POLAR-7B": [-0.5702977776527405, -11.030370712280273]}


def cache_dir() -> Path:
    """Where rmclient keeps what it builds (``$RMCLIENT_CACHE`` or ``~/.cache/rmclient``)."""
    return Path(os.environ.get("RMCLIENT_CACHE", Path.home() / ".cache" / "rmclient"))


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face hub answers within ``timeout`` seconds (offline mode: no)."""
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false"):
        return False
    import httpx

    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    try:
        httpx.head(endpoint, timeout=timeout)
        return True
    except httpx.HTTPError:
        return False


def _cached(model: str) -> bool:
    from transformers import AutoConfig

    try:
        AutoConfig.from_pretrained(model, local_files_only=True, trust_remote_code=True)
        return True
    except Exception:  # noqa: BLE001 - any failure means "not usable offline"
        return False


def resolve_model(model: str) -> Tuple[str, bool]:
    """``(path, is_tiny)``: the model when it can be loaded, else a tiny stand-in built locally."""
    if Path(model).exists() or _cached(model) or hub_reachable():
        return model, False
    from .testing import build_polar_model

    tiny = cache_dir() / "tiny-polar"
    if not (tiny / "config.json").exists():
        build_polar_model(tiny)
    return str(tiny), True


def rank(model: str, **client_kwargs: Any) -> Tuple[str, bool, List[Tuple[float, Dict[str, Any]]]]:
    """Score EXAMPLES with ``model`` (or the tiny stand-in); best first."""
    from .client import RewardModelClient

    path, tiny = resolve_model(model)
    client = RewardModelClient(path, trust_remote_code=not tiny, **client_kwargs)
    rewards = client(EXAMPLES)
    return path, tiny, sorted(zip(rewards, EXAMPLES), key=lambda x: -x[0])
