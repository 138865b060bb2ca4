"""Scoring on an engine server: an adapter (pure) plus the transport (I/O)."""

from __future__ import annotations

import logging
from typing import Any, Dict, List, Optional, Sequence

from rmclient.adapters import ADAPTERS, get_adapter
from rmclient.adapters.base import EncodedInput

from .errors import ServerError
from .transport import RetryPolicy, Transport

logger = logging.getLogger(__name__)


class EngineBackend:
    """One engine server. On first use it asks the server its version and model.

    The version (vLLM ``/version``, sglang ``/get_server_info``) picks the row of
    the adapter's quirk table; ``/v1/models`` gives the served model name and
    ``max_model_len``. A route the server lacks (404 and other 4xx) leaves the
    value unknown and the adapter falls back to the request right on most
    versions; a server that cannot be reached raises :class:`ServerError`.
    """

    def __init__(
        self,
        server_type: str,
        address: str,
        *,
        api_key: Optional[str] = None,
        connect_timeout: float = 5.0,
        read_timeout: float = 300.0,
        retry: RetryPolicy = RetryPolicy(),
        batch_size: int = 64,
        engine_version: Optional[str] = None,
        served_model: Optional[str] = None,
        adapter_options: Optional[Dict[str, Any]] = None,
    ) -> None:
        self.server_type = server_type
        self.transport = Transport(
            address, api_key=api_key, connect_timeout=connect_timeout, read_timeout=read_timeout, retry=retry
        )
        self.batch_size = batch_size
        self.engine_version = engine_version
        self.served_model = served_model
        self.max_model_len: Optional[int] = None
        self._adapter_options = adapter_options or {}
        self._adapter: Any = None

    def _discover(self, path: Optional[str]) -> Any:
        if path is None:
            return None
        try:
            return self.transport.get(path)
        except ServerError as exc:
            if exc.status is None or exc.status >= 500:
                raise
            logger.info("%s does not answer %s (%s)", self.transport.base_url, path, exc.status)
            return None

    @property
    def adapter(self) -> Any:
        """The adapter for this server's engine and version (discovered on first use)."""
        if self._adapter is None:
            cls = ADAPTERS[self.server_type]
            version = self.engine_version
            if version is None:
                body = self._discover(cls.version_path)
                version = cls.parse_version(body) if body is not None else None
            models = self._discover(cls.models_path)
            name, self.max_model_len = cls.parse_models(models) if models is not None else (None, None)
            model = self.served_model or name
            self._adapter = get_adapter(self.server_type, version, model=model, **self._adapter_options)
            logger.info(
                "%s at %s: version %s, model %s, max_model_len %s",
                self.server_type, self.transport.base_url, version or "unknown", model, self.max_model_len,
            )
        return self._adapter

    def score(self, inputs: Sequence[EncodedInput]) -> List[float]:
        """Raw rewards for encoded inputs (all ids or all text), in input order."""
        adapter = self.adapter
        rewards: List[float] = []
        for lo in range(0, len(inputs), self.batch_size):
            chunk = inputs[lo : lo + self.batch_size]
            request = adapter.build_request(chunk)
            body = self.transport.request(request)
            rewards.extend(adapter.parse_response(body, len(chunk), self.transport.base_url + request.path))
        return rewards

    def close(self) -> None:
        """Close the connection."""
        self.transport.close()
