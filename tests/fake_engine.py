"""A loopback fake of sglang / vLLM / lmdeploy reward servers, for client tests.

The reward of a sample is derived from its input (``reward_of``), so a reward
attached to the wrong sample is caught. ``script`` queues what the scoring
route does next (an HTTP status, ``"stall"``, ``"garbage"``, ``"nan"``,
``"inf"``, ``"short"``, ``"reorder"``, ``"duplicate"``); when it is empty the
route answers correctly after ``delay`` seconds. ``max_concurrent`` records the
most scoring requests it ever had in flight at once.
"""

from __future__ import annotations

import json
import math
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, List, Optional


def reward_of(item: Any) -> float:
    """A deterministic reward derived from token ids or text."""
    values = [ord(c) for c in item] if isinstance(item, str) else list(item)
    return round(sum((i + 1) * v for i, v in enumerate(values)) % 1000 / 100.0 - 5.0, 6)


class FakeEngine:
    """``with FakeEngine("vllm", "0.32.0") as fake: fake.url``."""

    def __init__(
        self,
        engine: str,
        version: Optional[str] = None,
        *,
        model: str = "served-rm",
        max_model_len: Optional[int] = 4096,
        per_token: bool = False,
        stall: float = 2.0,
        delay: float = 0.0,
        poison: Any = None,
    ) -> None:
        self.engine = engine
        self.version = version
        self.model = model
        self.max_model_len = max_model_len
        self.per_token = per_token
        self.stall = stall
        self.delay = delay
        self.poison = poison  # a predicate: a request holding an input it accepts gets a 400
        self.in_flight = 0
        self.max_concurrent = 0
        self._count = threading.Lock()
        self.script: List[Any] = []
        self.requests: List[Dict[str, Any]] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> "FakeEngine":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def stop(self) -> None:
        """Kill the server: the port stops accepting connections."""
        self._server.shutdown()
        self._server.server_close()

    # -- routes ---------------------------------------------------------------

    def get(self, path: str):
        if path == "/health":
            return 200, {}
        if path == "/version" and self.engine == "vllm" and self.version:
            return 200, {"version": self.version}
        if path == "/get_server_info" and self.engine == "sglang" and self.version:
            return 200, {"version": self.version, "model_path": "/models/x"}
        if path == "/v1/models":
            card: Dict[str, Any] = {"id": self.model, "object": "model"}
            if self.max_model_len:
                card["max_model_len"] = self.max_model_len
            return 200, {"object": "list", "data": [card]}
        return 404, {"detail": "Not Found"}

    def post(self, path: str, body: Dict[str, Any]):
        self.requests.append({"path": path, "body": body})
        action = self.script.pop(0) if self.script else None
        if isinstance(action, int):
            return action, {"message": f"scripted {action}"}
        if action == "stall":
            time.sleep(self.stall)
        elif self.delay:
            time.sleep(self.delay)
        if action == "garbage":
            return 200, "not json at all"
        items = body.get("input_ids") or body.get("text") or body.get("input") or []
        if self.poison is not None and any(self.poison(x) for x in items):
            return 400, {"message": "poisoned input"}
        if self.engine == "openrlhf" and path == "/get_reward":
            values = [reward_of(q) for q in body["query"]]
            if self.version == "old":  # OpenRLHF before scores/extra_logs
                out = {"rewards": values}
            else:
                out = {"rewards": values, "scores": values, "extra_logs": {"dummy_scores": values}}
            if action in ("nan", "inf", "short"):
                out["rewards"] = [math.nan if action == "nan" else math.inf] + values[1:] if action != "short" else values[:-1]
            return 200, out
        if self.engine == "sglang" and path == "/classify":
            items = body.get("input_ids") or body.get("text")
            values = [reward_of(x) for x in items]
            out = [{"embedding": [v], "meta_info": {"id": str(i)}} for i, v in enumerate(values)]
        elif path == "/pooling" and self.engine in ("vllm", "lmdeploy"):
            items = body["input"]
            items = [items] if isinstance(items, str) or (items and isinstance(items[0], int)) else items
            values = [reward_of(x) for x in items]
            if self.engine == "vllm":
                data = [[[0.5]] * 3 + [[v]] if self.per_token else [v] for v in values]
            else:
                data = values
            out = {"object": "list", "data": [{"index": i, "object": "pooling", "data": d} for i, d in enumerate(data)]}
        else:
            return 404, {"detail": "Not Found"}
        if action in ("nan", "inf"):
            out = json.loads(json.dumps(out).replace(str(values[0]), "NaN" if action == "nan" else "Infinity", 1))
        if action in ("reorder", "duplicate") and isinstance(out, dict):
            data = list(reversed(out["data"]))
            if action == "duplicate" and len(data) > 1:
                data[0] = {**data[0], "index": data[1]["index"]}
            out = {**out, "data": data}
        if action == "short":
            out = out[:-1] if isinstance(out, list) else {**out, "data": out["data"][:-1]}
        return 200, out

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, status: int, body: Any) -> None:
                raw = body.encode() if isinstance(body, str) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def do_GET(self) -> None:
                self._send(*fake.get(self.path))

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
                body["_auth"] = self.headers.get("Authorization")
                with fake._count:
                    fake.in_flight += 1
                    fake.max_concurrent = max(fake.max_concurrent, fake.in_flight)
                try:
                    status, out = fake.post(self.path, body)
                finally:
                    # Count the request finished before its answer leaves: once the client has the
                    # answer it may send the next one before this thread would run again.
                    with fake._count:
                        fake.in_flight -= 1
                try:
                    self._send(status, out)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        return Handler
