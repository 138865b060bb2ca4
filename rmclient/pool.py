"""Endpoint pool: which reward server gets the next request.

Least-outstanding-work routing over healthy endpoints (the tokens of the
requests each has in flight: a server queues what it cannot run yet, so
counting requests would hand the long ones to whichever came next), a per-endpoint
in-flight limit (the smaller of the user's and the engine's, e.g. 1 for
lmdeploy 0.9.1-0.11), and health checks: an endpoint that fails at the
connection level or with a 5xx is taken out and probed on its health route
until it answers again; one that keeps answering slower than its hedges is
taken out for a while (a growing quarantine) even though its health route
answers. When every endpoint is out, requests still go to them (each attempt
is then a probe), so a lone server that is down fails after the retry policy's
attempts instead of waiting forever. An endpoint that answers 401/403/404/405
is misconfigured (a wrong key, route or engine type): it is disabled for good.

Discovery (version, model, longest input) runs per endpoint, in parallel, each
request bounded by ``discovery_timeout``: the first endpoint that answers starts
the work; the others join when they answer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import Any, Deque, Dict, List, Optional, Sequence, Tuple

from rmclient.adapters import ADAPTERS, get_adapter
from rmclient.adapters.base import Adapter, Request, ServerInfo

from .errors import ClientClosedError, ResponseError, ServerError
from .transport import Transport

logger = logging.getLogger(__name__)

#: Recent successful requests kept to estimate how long a request of a given size takes.
LATENCY_WINDOW = 64
#: Hedges an endpoint may lose in a row before it is quarantined; the first quarantine (s).
SLOW_STRIKES = 1
QUARANTINE = 5.0
#: Seconds from a pool's first request during which each endpoint takes one request at a time,
#: unless every endpoint answers sooner: a misconfigured server (401, 404) costs one request before
#: it is disabled, and the endpoints open their other slots together, so none that answers first
#: grabs the waiting requests.
PROBATION = 0.5


class CallFailed(Exception):
    """The whole call cannot succeed (every endpoint misconfigured, or the client closed): ``error`` says why."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


class Endpoint:
    """One server: its transport, adapter (after discovery), load and health."""

    def __init__(self, server_type: str, address: str, transport: Transport, limit: int, read_timeout: float) -> None:
        self.server_type = server_type
        self.address = address
        self.transport = transport
        self.limit = limit
        self.read_timeout = read_timeout
        self.in_flight = 0
        self.outstanding = 0  # tokens (or samples) of the requests in flight
        self.healthy = True
        self.discovering = False
        #: Set when the endpoint answered 401/403/404/405: never used again.
        self.disabled: Optional[ServerError] = None
        self.slow_strikes = 0
        self.quarantine = QUARANTINE
        #: The server answered something (anything HTTP) at least once.
        self.answered = False
        #: When its probation ends (set by the pool's first request; see ``PROBATION``).
        self.probation_until: Optional[float] = None
        self.adapter: Optional[Adapter] = None
        #: What the server said about itself at first contact.
        self.info = ServerInfo()
        self._probe: Optional["asyncio.Task[None]"] = None

    @property
    def room(self) -> int:
        """How many requests it may have in flight now: one while on probation."""
        if self.probation_until is not None and time.monotonic() >= self.probation_until:
            return self.limit
        return 1

    @property
    def url(self) -> str:
        return self.transport.base_url

    @property
    def max_model_len(self) -> Optional[int]:
        """The longest input this server scores, as it reported it (``None``: unknown)."""
        return self.info.max_input_len

    async def _get(self, path: str, timeout: float) -> Any:
        try:
            return await self.transport.send(Request("GET", path), timeout=timeout)
        except ServerError as exc:
            if exc.retryable:
                raise
            logger.info("%s does not answer %s (%s)", self.url, path, exc.status)
        except ResponseError as exc:
            logger.info("%s answers %s with no JSON: %s", self.url, path, exc)
        return None

    async def discover(
        self,
        version: Optional[str],
        model: Optional[str],
        architecture: Optional[str],
        options: Dict[str, Any],
        timeout: float = 10.0,
    ) -> None:
        """Ask the server about itself (its adapter's info routes) and pick the adapter for its version."""
        cls = ADAPTERS[self.server_type]
        bodies: Dict[str, Any] = {}
        for alternatives in cls.info_routes:
            for path in alternatives:
                body = await self._get(path, timeout)
                if body is not None:
                    bodies[path] = body
                    break
        self.info = cls.read_info(bodies)
        version = version or self.info.version
        options = {**cls.discovered_options(self.info), **options}  # what the user set wins
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
    """The servers of one ``server_type`` for one event loop.

    ``stats`` counts the requests sent, those hedged and the hedges that won.
    """

    def __init__(
        self,
        server_type: str,
        addresses: Sequence[str],
        *,
        max_in_flight: int = 8,
        api_key: Optional[str] = None,
        connect_timeout: float = 5.0,
        read_timeout: float = 300.0,
        discovery_timeout: float = 10.0,
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
                read_timeout,
            )
            for a in addresses
        ]
        self.engine_version = engine_version
        self.served_model = served_model
        self.architecture = architecture
        self.adapter_options = adapter_options or {}
        self.health_interval = health_interval
        self.discovery_timeout = min(discovery_timeout, read_timeout)
        self.closed = False
        self.stats = {"requests": 0, "hedged": 0, "hedges_won": 0}
        self._latency: Deque[Tuple[float, int]] = deque(maxlen=LATENCY_WINDOW)
        self._changed = asyncio.Condition()
        self._discovery: Dict[Endpoint, "asyncio.Task[None]"] = {}

    # -- discovery ------------------------------------------------------------

    async def start(self, deadline_at: Optional[float] = None) -> None:
        """Discover every endpoint (concurrently), returning once one is ready, all have answered,
        or ``deadline_at`` (``time.monotonic()``) has passed. The rest join when they answer;
        unreachable ones start out of rotation. A bad configuration (an engine version that
        cannot serve the model) is raised here."""
        if not self._discovery:
            for endpoint in self.endpoints:
                self._discovery[endpoint] = asyncio.ensure_future(self._discover(endpoint))
        tasks = list(self._discovery.values())
        while not any(e.adapter is not None for e in self.endpoints):
            pending = [t for t in tasks if not t.done()]
            left = None if deadline_at is None else deadline_at - time.monotonic()
            if not pending or (left is not None and left <= 0):
                break
            await asyncio.wait(pending, timeout=left, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]

    async def _discover(self, endpoint: Endpoint) -> None:
        endpoint.discovering = True
        try:
            await endpoint.discover(
                self.engine_version, self.served_model, self.architecture, self.adapter_options,
                self.discovery_timeout,
            )
        except ServerError as exc:
            logger.warning("%s is unreachable at start: %s", endpoint.url, exc)
            async with self._changed:
                self._take_out(endpoint)
        finally:
            endpoint.discovering = False
            async with self._changed:
                self._changed.notify_all()

    def ready(self) -> bool:
        """Whether every endpoint's discovery has ended (:meth:`start` would return at once)."""
        return len(self._discovery) == len(self.endpoints) and all(t.done() for t in self._discovery.values()) \
            and any(e.adapter is not None for e in self.endpoints)

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
            await endpoint.discover(
                self.engine_version, self.served_model, self.architecture, self.adapter_options,
                self.discovery_timeout,
            )
        assert endpoint.adapter is not None
        return endpoint.adapter

    # -- routing --------------------------------------------------------------

    def unreachable(self) -> bool:
        """Whether no endpoint ever answered anything (every connection refused or timed out)."""
        return not any(e.answered or e.adapter is not None for e in self.endpoints)

    def usable(self) -> bool:
        """Whether any endpoint is not disabled."""
        return any(e.disabled is None for e in self.endpoints)

    async def acquire(self, avoid: Sequence[Endpoint] = (), work: int = 1) -> Endpoint:
        """The least loaded endpoint with room, preferring healthy ones not in ``avoid``; waits for room.

        ``work`` (the request's tokens) counts toward the endpoint's load until ``release``.
        Every endpoint disabled: :class:`CallFailed` with the first one's error.
        """
        async with self._changed:
            while True:
                if self.closed:
                    raise CallFailed(ClientClosedError({}, []))
                if not self.usable():
                    raise CallFailed(next(e.disabled for e in self.endpoints if e.disabled is not None))
                endpoint = self._pick(avoid)
                if endpoint is not None:
                    self._take(endpoint, work)
                    return endpoint
                try:
                    await self._changed.wait()
                except asyncio.CancelledError:
                    self._changed.notify(1)  # a slot handed to this waiter goes to the next one
                    raise

    def _take(self, endpoint: Endpoint, work: int) -> None:
        if endpoint.probation_until is None:  # the pool's first request: one probation for all
            until = time.monotonic() + PROBATION
            for e in self.endpoints:
                e.probation_until = until
            asyncio.get_running_loop().call_later(PROBATION, self._wake)
        endpoint.in_flight += 1
        endpoint.outstanding += work
        self.stats["requests"] += 1

    def _pick(self, avoid: Sequence[Endpoint]) -> Optional[Endpoint]:
        live = [e for e in self.endpoints if e.disabled is None and not e.discovering]
        open_ = [e for e in live if e.in_flight < e.room]
        for group in (
            [e for e in open_ if e.healthy and e not in avoid],
            [e for e in open_ if e.healthy],
        ):
            if group:
                return min(group, key=_load)
        if any(e.healthy for e in live) or any(e.discovering for e in self.endpoints):
            return None  # healthy (or soon known) ones are busy: wait for them rather than hit a failing one
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
            healthy = endpoint.healthy
            if error is None or isinstance(error, ResponseError) or (isinstance(error, ServerError) and error.status):
                if not endpoint.answered:
                    endpoint.answered = True
                    self._end_probation_if_all_answered()
            if isinstance(error, ServerError) and (error.status is None or error.status >= 500):
                self._take_out(endpoint)
            elif error is None:
                endpoint.slow_strikes = 0
                endpoint.quarantine = QUARANTINE
                self._bring_back(endpoint)
            if error is not None or endpoint.healthy != healthy:
                self._changed.notify_all()  # the routing may have changed: every waiter looks again
            else:
                self._changed.notify(1)  # one slot: one waiter, first come first served

    def _end_probation_if_all_answered(self) -> None:
        """Every endpoint has answered (or is disabled): the probation has done its job."""
        if all(e.answered or e.disabled is not None for e in self.endpoints) \
                and any(e.probation_until != 0.0 for e in self.endpoints):
            for e in self.endpoints:
                e.probation_until = 0.0
            self._wake()

    def _wake(self) -> None:
        """A probation ended: the waiters look again."""
        async def notify() -> None:
            async with self._changed:
                self._changed.notify_all()

        if not self.closed:
            asyncio.ensure_future(notify())

    def disable(self, endpoint: Endpoint, error: ServerError) -> None:
        """Never use ``endpoint`` again: it answered with a misconfiguration status."""
        if endpoint.disabled is None:
            logger.error("%s is not usable: %s", endpoint.url, error)
            endpoint.disabled = error
            self._end_probation_if_all_answered()

    # -- hedging ----------------------------------------------------------------

    def record_latency(self, seconds: float, work: int) -> None:
        """A successful request of ``work`` tokens took ``seconds``."""
        self._latency.append((seconds, max(work, 1)))

    def hedge_delay(self, work: int, policy: Any) -> Optional[float]:
        """How long a request of ``work`` tokens may stay unanswered before it is hedged: ``hedge_after``
        times the slowest of the recent requests scaled to its size (``None``: no data yet, or off)."""
        if policy.hedge_after is None or not self._latency or len(self.endpoints) < 2:
            return None
        scaled = sorted(s * max(work, 1) / w for s, w in self._latency)
        p90 = scaled[min(len(scaled) - 1, int(0.9 * len(scaled)))]
        return max(policy.hedge_min_delay, policy.hedge_after * p90)

    def try_hedge(self, primary: Endpoint, avoid: Sequence[Endpoint], work: int, policy: Any) -> Optional[Endpoint]:
        """A healthy endpoint outside ``avoid`` with room right now, or ``None``: within the hedge budget,
        unless ``primary`` (where the request waits) is already out of rotation."""
        if primary.healthy and self.stats["hedged"] >= max(2, policy.hedge_fraction * self.stats["requests"]):
            return None
        candidates = [
            e for e in self.endpoints
            if e.disabled is None and e.healthy and not e.discovering and e not in avoid and e.in_flight < e.room
        ]
        if not candidates:
            return None
        endpoint = min(candidates, key=_load)
        self._take(endpoint, work)
        self.stats["hedged"] += 1
        return endpoint

    def note_slow(self, endpoint: Endpoint) -> None:
        """``endpoint`` lost a hedge: after ``SLOW_STRIKES`` in a row it is quarantined (its health route
        may well answer: a server that takes requests and never answers them)."""
        self.stats["hedges_won"] += 1
        endpoint.slow_strikes += 1
        if endpoint.slow_strikes >= SLOW_STRIKES and endpoint.healthy:
            logger.warning("%s lost %d hedges in a row: out of rotation for %.0f s", endpoint.url,
                           endpoint.slow_strikes, endpoint.quarantine)
            self._take_out(endpoint, quarantine=endpoint.quarantine)
            endpoint.quarantine = min(endpoint.quarantine * 2, 300.0)

    # -- health -----------------------------------------------------------------

    def _take_out(self, endpoint: Endpoint, quarantine: float = 0.0) -> None:
        if endpoint.healthy:
            logger.warning("taking %s out of rotation", endpoint.url)
        endpoint.healthy = False
        if endpoint._probe is None or endpoint._probe.done():
            endpoint._probe = asyncio.ensure_future(self._probe_until_healthy(endpoint, quarantine))

    def _bring_back(self, endpoint: Endpoint) -> None:
        if not endpoint.healthy:
            logger.warning("%s is back in rotation", endpoint.url)
        endpoint.healthy = True

    async def _probe_until_healthy(self, endpoint: Endpoint, quarantine: float = 0.0) -> None:
        path = ADAPTERS[self.server_type].health_path
        delay = self.health_interval
        if quarantine:
            await asyncio.sleep(quarantine)
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
        """Stop probes and discovery, close connections; calls in flight end with ``ClientClosedError``."""
        self.closed = True
        async with self._changed:
            self._changed.notify_all()
        for task in self._discovery.values():
            task.cancel()
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
