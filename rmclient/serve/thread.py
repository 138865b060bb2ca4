"""A :class:`~rmclient.serve.app.RewardServer` served from a background event-loop thread (tests, notebooks)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from .._loop import LoopThread
from .app import RewardServer


class ServerThread:
    """Serve a :class:`RewardServer` from a background thread.

        with ServerThread(RewardServer(path)) as s:
            RewardModelClient(path, server_type="rmclient", server_address=s.url)(samples)

    ``port=0`` takes a free port; ``url`` is ``http://host:port``.
    """

    def __init__(self, server: RewardServer, host: str = "127.0.0.1", port: int = 0) -> None:
        self.server = server
        self.host = host
        self.port = port
        self._loop = LoopThread("rmclient-serve")
        self._runner: Any = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> "ServerThread":
        """Load the model, bind the port and serve (returns once the port accepts connections)."""
        from aiohttp import web

        async def up() -> None:
            self._runner = self.server.runner(access_log=None)
            await self._runner.setup()
            site = web.TCPSite(self._runner, self.host, self.port)
            await site.start()
            self.port = int(self._runner.addresses[0][1])

        self._loop.run(up())
        return self

    def stop(self) -> None:
        """Close the server (drain, clean up) and end its thread."""
        runner, self._runner = self._runner, None
        if runner is not None:
            with contextlib.suppress(Exception):
                self._loop.run(asyncio.wait_for(runner.cleanup(), 30))
        self._loop.stop()

    def __enter__(self) -> "ServerThread":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
