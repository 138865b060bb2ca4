"""Settings by name for the configure-by-name hooks (verl's module-level functions, the ms-swift plugin):
keyword arguments (verl's ``reward_kwargs``), else ``RMCLIENT_*`` environment variables, else defaults;
and the one client they describe, built once per process."""

from __future__ import annotations

import threading
from typing import Any, Dict, Mapping

from ..errors import ConfigurationError

# -- settings: reward_kwargs (verl) and RMCLIENT_* environment variables ----------------

#: Every setting the configure-by-name hooks read (verl's module-level functions, the ms-swift
#: plugin) and its default. Each is taken from the keyword arguments, else from the
#: environment variable ``RMCLIENT_<NAME>`` (e.g. ``RMCLIENT_API_KEY``), else the default.
SETTINGS: Dict[str, Any] = {
    "model": None,
    "server_type": "transformers",
    "server_address": None,
    "trust_remote_code": False,
    "recipe": None,
    "api_key": None,
    "on_error": "raise",
    "prompt_key": "prompt",
    "reference_column": "reference",
    "strip_think": False,
    "kind": "reward",  # "steps": a process reward model, scored per step and aggregated
    "aggregate": "min",
    "step_separator": "\n\n",
}
_BOOLEAN_SETTINGS = ("trust_remote_code", "strip_think")
#: The settings that configure the client (the rest configure the hook).
CLIENT_SETTINGS = ("model", "server_type", "server_address", "trust_remote_code", "recipe", "api_key", "on_error")


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def read_settings(kwargs: Mapping[str, Any], environ: Mapping[str, str]) -> Dict[str, Any]:
    """Every :data:`SETTINGS` value, from ``kwargs``, else ``environ``'s ``RMCLIENT_*``, else the default.

    Other keywords are ignored (verl's reward loop adds ``reward_router_address``...).
    A missing, ``None`` or empty keyword falls through to the environment; ``False`` does not.
    """
    from ..judge_recipes import JUDGE_RECIPES
    from ..recipes import RECIPES
    from ..steps import AGGREGATES

    cfg: Dict[str, Any] = {}
    for key, default in SETTINGS.items():
        value = kwargs.get(key)
        if value is None or value == "":
            value = environ.get(f"RMCLIENT_{key.upper()}")
        if value is None or value == "":
            value = default
        cfg[key] = _truthy(value) if key in _BOOLEAN_SETTINGS else value
    address = cfg["server_address"]
    if address is not None and not isinstance(address, str):  # a list (or omegaconf ListConfig) of servers
        cfg["server_address"] = tuple(str(a) for a in address)
    judge = str(cfg["server_type"]).lower() == "openai"
    valid = sorted(JUDGE_RECIPES) if judge else RECIPES  # an LLM judge's recipes are its own
    if cfg["recipe"] is not None and cfg["recipe"] not in valid:
        raise ConfigurationError(f"unknown recipe {cfg['recipe']!r} (RMCLIENT_RECIPE); choose one of {valid}")
    if cfg["kind"] not in ("reward", "steps"):
        raise ConfigurationError(f"unknown kind {cfg['kind']!r} (RMCLIENT_KIND); choose 'reward' or 'steps'")
    if cfg["aggregate"] not in AGGREGATES:
        raise ConfigurationError(f"unknown aggregate {cfg['aggregate']!r} (RMCLIENT_AGGREGATE); choose one of "
                                 f"{sorted(AGGREGATES)}")
    return cfg


_clients: Dict[Any, Any] = {}
_clients_lock = threading.Lock()


def client_from_settings(kwargs: Mapping[str, Any], environ: Mapping[str, str]) -> Any:
    """The ``RewardModelClient`` the settings (:func:`read_settings`) describe, built once per process."""
    cfg = read_settings(kwargs, environ)
    if not cfg["model"]:
        raise ConfigurationError(
            "no reward model configured: set RMCLIENT_MODEL (and RMCLIENT_SERVER_TYPE / RMCLIENT_SERVER_ADDRESS "
            "for a server), or pass model=... (verl: in reward.custom_reward_function.reward_kwargs)"
        )
    key = tuple(cfg[k] for k in CLIENT_SETTINGS)
    with _clients_lock:
        if key not in _clients:
            from ..client import RewardModelClient

            address = cfg["server_address"]
            _clients[key] = RewardModelClient(
                cfg["model"],
                server_type=cfg["server_type"],
                server_address=list(address) if isinstance(address, tuple) else address,
                trust_remote_code=cfg["trust_remote_code"],
                recipe=cfg["recipe"],
                api_key=cfg["api_key"],
                on_error=cfg["on_error"],
            )
        return _clients[key]
