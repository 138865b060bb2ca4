"""Facts of a model read from its ``config.json``: the raw config and its own context length."""

from __future__ import annotations

from typing import Any, Dict, Optional

#: Config keys that bound the sequence length, as the engines read them (vLLM
#: ``config/model.py`` ``_get_and_verify_max_len``; lmdeploy ``utils.py`` the same list).
LENGTH_KEYS = (
    "max_position_embeddings",
    "n_positions",
    "max_seq_len",
    "seq_length",
    "model_max_length",
    "max_sequence_length",
    "max_seq_length",
    "seq_len",
)
#: Nested configs of multimodal checkpoints whose language model bounds the length.
_TEXT_CONFIGS = ("text_config", "llm_config", "language_config")


def load_config(path: str) -> Dict[str, Any]:
    """The model's raw config.json as a dict (no remote code is run).

    A folder that does not exist, or a hub id that cannot be fetched, is a
    :class:`~rmclient.errors.ConfigurationError` saying so.
    """
    import os

    from transformers import PretrainedConfig

    from .errors import ConfigurationError

    try:
        config, _ = PretrainedConfig.get_config_dict(path)
    except OSError as exc:
        if os.path.isdir(path):
            raise ConfigurationError(f"cannot load the model: {path} has no readable config.json ({exc})") from None
        looks_local = os.sep in str(path) and (str(path).startswith((".", os.sep, "~")) or str(path).count("/") > 1)
        if looks_local:
            raise ConfigurationError(f"cannot load the model: no such folder: {path}") from None
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigurationError(
            f"cannot load the model: no such folder or hub id (or the hub is unreachable): {path} ({first})"
        ) from None
    return config


def context_length(config: Dict[str, Any]) -> Optional[int]:
    """The longest input the model itself takes, as vLLM derives it; ``None`` if the config says nothing.

    The smallest of the length keys, scaled by a RoPE scaling factor where vLLM scales
    it (not for ``su``/``longrope``/``llama3``, whose ``max_position_embeddings`` is already
    the extended length; ``yarn`` scales ``original_max_position_embeddings``).
    """
    for key in _TEXT_CONFIGS:
        if isinstance(config.get(key), dict):
            config = config[key]
            break
    lengths = [v for v in (config.get(k) for k in LENGTH_KEYS) if isinstance(v, int) and not isinstance(v, bool) and v > 0]
    if not lengths:
        return None
    length = min(lengths)
    rope = config.get("rope_scaling") or config.get("rope_parameters")
    if isinstance(rope, dict):
        kind = rope.get("rope_type", rope.get("type"))
        factor = rope.get("factor")
        if kind not in (None, "default", "su", "longrope", "llama3") and isinstance(factor, (int, float)) and factor > 1:
            if kind == "yarn" and isinstance(rope.get("original_max_position_embeddings"), int):
                length = rope["original_max_position_embeddings"]
            length = int(length * factor)
    return length
