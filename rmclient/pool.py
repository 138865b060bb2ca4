"""Endpoint pool: which reward server gets the next request.

Least-outstanding-work routing over healthy endpoints (the tokens of the
requests each has in flight: a server queues what it cannot run yet, so
counting requests would hand the long ones to whichever came next), a per-endpoint
in-flight limit (the smaller of the user's and the engine's, e.g. 1 for
lmdeploy 0.9.1-0.11), and health checks: an endpoint that fails at the
connection level or with a 5xx is taken out and probed on its health route
until it answers again. When every endpoint is out, requests still go to them
(each attempt is then a probe), so a lone server that is down fails after the
retry policy's attempts instead of waiting forever.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Dict, List, Optional, Sequence, Tuple

from rmclient.adapters import ADAPTERS, get_adapter
from rmclient.adapters.base import Adapter, Request, ServerInfo

from .errors import ResponseError, ServerError
from .transport import Transport

logger = logging.getLogger(__name__)


class Endpoint:
    """One server: its transport, adapter (after discovery), load and health."""

    def __init__(self, server_type: str, address: str, transport: Transport, limit: int) -> None:
        self.server_type = server_type
        self.address = address
        self.transport = transport
        self.limit = limit
        self.in_flight = 0
        self.outstanding = 0  # tokens (or samples) of the requests in flight
        self.healthy = True
        self.adapter: Optional[Adapter] = None
        #: What the server said about itself at first contact.
        self.info = ServerInfo()
        self._probe: Optional["asyncio.Task[None]"] = None

    @property
    def url(self) -> str:
        return self.transport.base_url

    async def _get(self, path: Optional[str]) -> Any:
        if path is None:
            return None
        try:
            return await self.transport.send(Request("GET", path))
        except ServerError as exc:
            if exc.retryable:
                raise
            logger.info("%s does not answer %s (%s)", self.url, path, exc.status)
        except ResponseError as exc:
            logger.info("%s answers %s with no JSON: %s", self.url, path, exc)
        return None

    @property
    def max_model_len(self) -> Optional[int]:
        """The longest input this server scores, as it reported it (``None``: unknown)."""
        return self.info.max_input_len

    async def discover(
        self, version: Optional[str], model: Optional[str], architecture: Optional[str], options: Dict[str, Any]
    ) -> None:
        """Ask the server about itself (its adapter's info routes) and pick the adapter for its version."""
        cls = ADAPTERS[self.server_type]
        bodies: Dict[str, Any] = {}
        for alternatives in cls.info_routes:
            for path in alternatives:
                body = await self._get(path)
                if body is not None:
                    bodies[path] = body
                    break
        self.info = cls.read_info(bodies)
        version = version or self.info.version
        self.adapter = get_adapter(
            self.server_type, version, model=model or self.info.model, architecture=architecture, **options
        )
        if self.adapter.max_in_flight is not None and self.adapter.max_in_flight < self.limit:
            self.limit = self.adapter.max_in_flight
        logger.info(
            "%s at %s: version %s, model %s, longest input %s, in-flight limit %d",
            self.server_type, self.url, version or "unknown", model or self.info.model,
            self.info.max_input_len or "not reported", self.limit,
        )


def _load(endpoint: Endpoint) -> Tuple[int, float]:
    return endpoint.outstanding, endpoint.in_flight / endpoint.limit


class EndpointPool:
    """The servers of one ``server_type`` for one event loop."""

    def __init__(
        self,
        server_type: str,
        addresses: Sequence[str],
        *,
        max_in_flight: int = 8,
        api_key: Optional[str] = None,
        connect_timeout: float = 5.0,
        read_timeout: float = 300.0,
        engine_version: Optional[str] = None,
        served_model: Optional[str] = None,
        architecture: Optional[str] = None,
        adapter_options: Optional[Dict[str, Any]] = None,
        health_interval: float = 1.0,
    ) -> None:
        if not addresses:
            raise ValueError("an endpoint pool needs at least one address")
        self.server_type = server_type
        self.endpoints = [
            Endpoint(
                server_type,
                a,
                Transport(a, api_key=api_key, connect_timeout=connect_timeout, read_timeout=read_timeout),
                max_in_flight,
            )
            for a in addresses
        ]
        self.engine_version = engine_version
        self.served_model = served_model
        self.architecture = architecture
        self.adapter_options = adapter_options or {}
        self.health_interval = health_interval
        self._changed = asyncio.Condition()
        self._started: Optional["asyncio.Task[None]"] = None

    # -- discovery ------------------------------------------------------------

    async def start(self) -> None:
        """Discover every endpoint once (concurrently). Unreachable ones start out of rotation."""
        if self._started is None:
            self._started = asyncio.ensure_future(self._discover_all())
        await asyncio.shield(self._started)

    async def _discover_all(self) -> None:
        results = await asyncio.gather(
            *(self._discover(e) for e in self.endpoints),
            return_exceptions=True,
        )
        for endpoint, result in zip(self.endpoints, results):
            if isinstance(result, BaseException):
                if not isinstance(result, ServerError):
                    raise result
                logger.warning("%s is unreachable at start: %s", endpoint.url, result)
                self._take_out(endpoint)

    def _discover(self, endpoint: Endpoint) -> Any:
        return endpoint.discover(self.engine_version, self.served_model, self.architecture, self.adapter_options)

    @property
    def max_model_len(self) -> Optional[int]:
        """The longest input every endpoint takes: the smallest any reported."""
        limits = [e.max_model_len for e in self.endpoints if e.max_model_len]
        return min(limits) if limits else None

    @property
    def inputs(self) -> str:
        """What requests carry (``Adapter.inputs``): text where any discovered endpoint takes only text."""
        kinds = {e.adapter.inputs for e in self.endpoints if e.adapter is not None}
        if not kinds:
            return ADAPTERS[self.server_type].inputs
        return "ids" if kinds == {"ids"} else next(k for k in sorted(kinds) if k != "ids")

    async def adapter_for(self, endpoint: Endpoint) -> Adapter:
        """The endpoint's adapter, discovering it first if it was unreachable at start."""
        if endpoint.adapter is None:
            await self._discover(endpoint)
        assert endpoint.adapter is not None
        return endpoint.adapter

    # -- routing --------------------------------------------------------------

    async def acquire(self, avoid: Sequence[Endpoint] = (), work: int = 1) -> Endpoint:
        """The least loaded endpoint with room, preferring healthy ones not in ``avoid``; waits for room.

        ``work`` (the request's tokens) counts toward the endpoint's load until ``release``.
        """
        async with self._changed:
            while True:
                endpoint = self._pick(avoid)
                if endpoint is not None:
                    endpoint.in_flight += 1
                    endpoint.outstanding += work
                    return endpoint
                await self._changed.wait()

    def _pick(self, avoid: Sequence[Endpoint]) -> Optional[Endpoint]:
        open_ = [e for e in self.endpoints if e.in_flight < e.limit]
        for group in (
            [e for e in open_ if e.healthy and e not in avoid],
            [e for e in open_ if e.healthy],
        ):
            if group:
                return min(group, key=_load)
        if any(e.healthy for e in self.endpoints):
            return None  # healthy ones are busy: wait for them rather than hit a failing one
        return min(open_, key=_load) if open_ else None

    async def release(self, endpoint: Endpoint, error: Optional[BaseException] = None, work: int = 1) -> None:
        """Give the slot back after a request that succeeded (``error=None``) or failed.

        A connection-level or 5xx error takes the endpoint out of rotation; a
        success brings it back; anything else (a 4xx, a cancellation) says
        nothing about its health.
        """
        async with self._changed:
            endpoint.in_flight -= 1
            endpoint.outstanding -= work
            if isinstance(error, ServerError) and (error.status is None or error.status >= 500):
                self._take_out(endpoint)
            elif error is None:
                self._bring_back(endpoint)
            self._changed.notify_all()

    def _take_out(self, endpoint: Endpoint) -> None:
        if endpoint.healthy:
            logger.warning("taking %s out of rotation", endpoint.url)
        endpoint.healthy = False
        if endpoint._probe is None or endpoint._probe.done():
            endpoint._probe = asyncio.ensure_future(self._probe_until_healthy(endpoint))

    def _bring_back(self, endpoint: Endpoint) -> None:
        if not endpoint.healthy:
            logger.warning("%s is back in rotation", endpoint.url)
        endpoint.healthy = True

    async def _probe_until_healthy(self, endpoint: Endpoint) -> None:
        path = ADAPTERS[self.server_type].health_path
        delay = self.health_interval
        while not endpoint.healthy:
            await asyncio.sleep(delay)
            try:
                await endpoint.transport.send(Request("GET", path), timeout=min(5.0, max(delay, 1.0)))
            except ServerError as exc:
                if exc.retryable:  # a 4xx (e.g. 405 on a POST-only route) still proves the server is up
                    delay = min(delay * 2, 10 * self.health_interval)
                    continue
            except Exception:  # noqa: BLE001 - a body that is not JSON is an answer too
                pass
            async with self._changed:
                self._bring_back(endpoint)
                self._changed.notify_all()

    async def aclose(self) -> None:
        """Stop probes and close connections."""
        for e in self.endpoints:
            if e._probe is not None:
                e._probe.cancel()
            await e.transport.aclose()


def parse_addresses(server_address: Any) -> List[str]:
    """A list, or a comma-separated string, of ``host:port`` / URLs."""
    if server_address is None:
        return []
    items = server_address.split(",") if isinstance(server_address, str) else list(server_address)
    return [a.strip() for a in items if a and a.strip()]

