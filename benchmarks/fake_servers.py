"""Fake sglang-style reward servers for the benchmark (aiohttp, one process, N ports).

    python benchmarks/fake_servers.py --replicas 4 --us-per-token 20 --serial

prints one JSON line ``{"ports": [...]}`` once every replica listens on
127.0.0.1, then serves until killed. Each replica is an sglang ``--is-embedding``
look-alike:

* ``POST /classify`` with ``{"input_ids": [[...], ...]}`` or ``{"text": [...]}``
  answers ``[{"embedding": [r], "meta_info": {"prompt_tokens": n}}, ...]``; ``r`` is
  derived from the input (its length and a few of its ids / characters), so a
  reward attached to the wrong sample would show;
* ``GET /health``, ``/get_server_info`` (``{"version": ...}``), ``/get_model_info``,
  ``/v1/models`` (the served name and ``max_model_len``);
* ``GET /stats`` (requests, samples, tokens, busy seconds since the last
  ``POST /reset_stats``).

``--tokenizer DIR`` makes a replica tokenize the texts it receives with that model's tokenizer
(batched, in the event loop, as an engine's tokenizer manager does) and derive the reward from
the ids, as for ids it receives: the cost a real engine pays for text. ``--us-per-token 0``
(default) answers at once. With ``--serial`` a replica
serves ONE request at a time (an ``asyncio.Lock`` per replica) and holds it for
``us_per_token`` microseconds per token received (text: one token per 4
characters); requests that arrive meanwhile wait in the replica's queue, as on
a real engine that is busy. The service time is a sleep: the replica uses no
CPU while "computing", so N replicas in one process model N machines.

Requests are parsed, and answers built, by sglang's server half in
``rmclient.adapters.sglang`` (the same code as ``rmclient serve``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any, Dict, List

from aiohttp import web

from rmclient.adapters.sglang import classify_response, parse_classify_request
from rmclient.errors import InvalidSampleError, ProtocolError


def reward_of(item: Any) -> float:
    """A cheap deterministic reward derived from token ids (or text)."""
    if isinstance(item, str):
        head, tail = [ord(c) for c in item[:4]], [ord(c) for c in item[-4:]]
    else:
        head, tail = item[:4], item[-4:]
    return ((len(item) * 31 + sum(head) * 7 + sum(tail)) % 1000) / 100.0 - 5.0


class Replica:
    def __init__(self, name: str, us_per_token: float, serial: bool, max_model_len: int,
                 tokenizer: Any = None) -> None:
        self.name = name
        self.tokenizer = tokenizer
        self.s_per_token = us_per_token * 1e-6
        self.lock = asyncio.Lock() if serial else None
        self.max_model_len = max_model_len
        self.reset()

    def reset(self) -> None:
        self.stats: Dict[str, float] = {"requests": 0, "samples": 0, "tokens": 0, "busy_s": 0.0}

    async def classify(self, request: web.Request) -> web.Response:
        body = await request.json()
        try:
            kind, items, single = parse_classify_request(body)
        except (ProtocolError, InvalidSampleError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        if kind == "text" and self.tokenizer is not None:
            kind, items = "input_ids", self.tokenizer(items)["input_ids"]
        tokens = sum(len(x) for x in items) // (4 if kind == "text" else 1)
        rewards = [reward_of(x) for x in items]
        if self.lock is not None:
            async with self.lock:
                t0 = time.perf_counter()
                if self.s_per_token:
                    await asyncio.sleep(tokens * self.s_per_token)
                self.stats["busy_s"] += time.perf_counter() - t0
        elif self.s_per_token:
            await asyncio.sleep(tokens * self.s_per_token)
        self.stats["requests"] += 1
        self.stats["samples"] += len(items)
        self.stats["tokens"] += tokens
        return web.json_response(classify_response(rewards, [len(x) for x in items], single))

    async def health(self, request: web.Request) -> web.Response:
        return web.Response(text="")

    async def server_info(self, request: web.Request) -> web.Response:
        return web.json_response({"version": "0.5.23", "model_path": self.name})

    async def model_info(self, request: web.Request) -> web.Response:
        return web.json_response({"model_path": self.name, "is_generation": False})

    async def models(self, request: web.Request) -> web.Response:
        card = {"id": self.name, "object": "model", "max_model_len": self.max_model_len}
        return web.json_response({"object": "list", "data": [card]})

    async def get_stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.stats)

    async def reset_stats(self, request: web.Request) -> web.Response:
        self.reset()
        return web.json_response({})

    def app(self) -> web.Application:
        app = web.Application(client_max_size=1 << 30)
        app.router.add_post("/classify", self.classify)
        app.router.add_get("/health", self.health)
        app.router.add_get("/get_server_info", self.server_info)
        app.router.add_get("/get_model_info", self.model_info)
        app.router.add_get("/v1/models", self.models)
        app.router.add_get("/stats", self.get_stats)
        app.router.add_post("/reset_stats", self.reset_stats)
        return app


async def serve(args: argparse.Namespace) -> None:
    ports = []
    tokenizer = None
    if args.tokenizer:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    for i in range(args.replicas):
        replica = Replica(f"fake-rm-{i}", args.us_per_token, args.serial, args.max_model_len, tokenizer)
        runner = web.AppRunner(replica.app(), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
        await site.start()
        ports.append(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]
    print(json.dumps({"ports": ports}), flush=True)
    await asyncio.Event().wait()


def main(argv: List[str] = sys.argv[1:]) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--replicas", type=int, default=1)
    p.add_argument("--us-per-token", type=float, default=0.0, help="service time per token received (µs)")
    p.add_argument("--serial", action="store_true", help="one request at a time per replica")
    p.add_argument("--max-model-len", type=int, default=32768)
    p.add_argument("--tokenizer", help="tokenize received texts with this model's tokenizer, as engines do")
    asyncio.run(serve(p.parse_args(argv)))


if __name__ == "__main__":
    main()
