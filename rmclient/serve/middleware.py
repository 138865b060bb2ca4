"""What wraps every route: the API key, one error answer per failure (a bad request fails alone), metrics."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Awaitable, Callable

from ..batcher import BatcherClosed
from ..errors import ConfigurationError, InvalidSampleError, ProtocolError, ResponseError
from .auth import OPEN_ROUTES, check_key
from .errors import RequestError

logger = logging.getLogger("rmclient.serve")

Handler = Callable[[Any], Awaitable[Any]]


def error_response(server: Any, exc: RequestError) -> Any:
    """The JSON error answer for ``exc``, counted in ``server.http_errors`` and logged."""
    from aiohttp import web

    server.http_errors[exc.status] = server.http_errors.get(exc.status, 0) + 1
    if exc.status >= 500:
        logger.error("%d: %s", exc.status, exc.message)
    else:
        logger.info("%d: %s", exc.status, exc.message)
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
    return web.json_response(exc.body(), status=exc.status, headers=headers)


def middleware(server: Any) -> Callable[..., Awaitable[Any]]:
    """The aiohttp middleware of ``server`` (a :class:`~rmclient.serve.app.RewardServer`)."""
    from aiohttp import web

    @web.middleware
    async def wrapped(request: Any, handler: Handler) -> Any:
        started = time.perf_counter()
        response = await answer(request, handler)
        resource = getattr(request.match_info.route, "resource", None)
        route = resource.canonical if resource is not None else "unmatched"
        server.metrics.requests.labels(route, str(response.status)).inc()
        server.metrics.latency.labels(route).observe(time.perf_counter() - started)
        return response

    async def answer(request: Any, handler: Handler) -> Any:
        server.http_requests += 1
        try:
            if server.api_key and request.path not in OPEN_ROUTES:
                check_key(request.headers.get("Authorization"), server.api_key)
            return await handler(request)
        except RequestError as exc:
            return error_response(server, exc)
        except InvalidSampleError as exc:
            return error_response(
                server, RequestError(400, str(exc), kind="invalid_sample", index=exc.index, field=exc.field))
        except ProtocolError as exc:
            return error_response(server, RequestError(400, str(exc), index=exc.index, field=exc.field))
        except ConfigurationError as exc:
            return error_response(server, RequestError(400, str(exc)))
        except ResponseError as exc:  # the model gave NaN/inf: never sent on as a reward
            return error_response(server, RequestError(500, str(exc), kind="model_error"))
        except BatcherClosed as exc:
            return error_response(server, RequestError(503, str(exc), kind="unavailable"))
        except web.HTTPRequestEntityTooLarge:
            limit = f"the body exceeds the server's limit of {server.max_body_bytes} bytes"
            return error_response(server, RequestError(413, limit, kind="too_large"))
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            return error_response(server, RequestError(exc.status, exc.reason or "error", kind="http_error"))
        except asyncio.CancelledError:
            raise
        except ConnectionError:  # the client hung up while its request was read: nobody to answer
            return error_response(server, RequestError(400, "the client disconnected before its request arrived",
                                                       kind="disconnected"))
        except Exception:  # noqa: BLE001 - one request's failure never stops the server
            logger.exception("%s %s failed", request.method, request.path)
            return error_response(server, RequestError(500, "internal error (see the server log)", kind="internal"))

    return wrapped
