"""A loopback fake of sglang / vLLM / lmdeploy reward servers, for client tests.

The reward of a sample is derived from its input (``reward_of``), so a reward
attached to the wrong sample is caught. ``script`` queues what the scoring
route does next (an HTTP status, ``"stall"``, ``"garbage"``, ``"nan"``,
``"inf"``, ``"short"``, ``"reorder"``, ``"duplicate"``, ``"deep"``, ``"huge"``,
``"truncated"``, ``"types"``); when it is empty it does ``always`` (default: answer
correctly after ``delay`` seconds). ``max_concurrent`` records the
most scoring requests it ever had in flight at once.

Length rules, as the engines have them: vLLM answers 400 to token ids longer than
``max_model_len``; sglang reports ``max_req_input_len = min(ctx - 1, kv_pool - 1) - 5``
in ``/server_info`` (0.5.6+) and ``/get_server_info`` and answers a whole request 400
when one input has ``len >= max_req_input_len`` (0.4.3 - 0.4.6 do; later versions
queue it instead, which a client must not rely on either), ``max_model_len`` on
``/v1/models`` only from 0.4.4.post3. ``longest`` records the longest input seen.

sglang ``/classify`` and OpenRLHF ``/get_reward`` requests are parsed, and their correct
answers built, by the adapters' server halves (the same code as ``rmclient serve``);
the scripted faults are applied on top.
"""

from __future__ import annotations

import json
import math
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, List, Optional

from packaging.version import Version

from rmclient.adapters.openrlhf import get_reward_response, parse_get_reward_request
from rmclient.adapters.sglang import classify_response, parse_classify_request
from rmclient.errors import InvalidSampleError, ProtocolError


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
        kv_pool_tokens: int = 1 << 20,
        always: Any = None,
        poison_status: int = 400,
    ) -> None:
        self.engine = engine
        self.version = version
        self.model = model
        self.max_model_len = max_model_len
        self.per_token = per_token
        self.stall = stall
        self.delay = delay
        self.poison = poison  # a predicate: a request holding an input it accepts gets a 400
        self.kv_pool_tokens = kv_pool_tokens
        self.always = always  # an action for every scoring request (after the script)
        self.poison_status = poison_status
        self.longest = 0
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

    def _at_least(self, version: str) -> bool:
        """Whether the faked engine version is ``version`` or later (an unknown one is the newest)."""
        if self.engine not in ("vllm", "sglang", "lmdeploy") or self.version is None:
            return True
        return Version(self.version.split("+")[0]) >= Version(version)

    @property
    def max_req_input_len(self) -> Optional[int]:
        """sglang's limit (tp_worker.py): inputs must be shorter than this."""
        if not self.max_model_len:
            return None
        return min(self.max_model_len - 1, self.kv_pool_tokens - 1) - 5

    def get(self, path: str):
        if path == "/health":
            return 200, {}
        if path == "/version" and self.engine == "vllm" and self.version:
            return 200, {"version": self.version}
        sglang_info = ("/get_server_info", "/server_info") if self._at_least("0.5.6") else ("/get_server_info",)
        if path in sglang_info and self.engine == "sglang":
            info: Dict[str, Any] = {"model_path": "/models/x", "max_req_input_len": self.max_req_input_len,
                                    "max_total_num_tokens": self.kv_pool_tokens, "context_length": None}
            if self.version:
                info["version"] = self.version
            return 200, info
        if path == "/v1/models" and self.engine != "openrlhf":  # serve_rm has no such route
            card: Dict[str, Any] = {"id": self.model, "object": "model"}
            if self.max_model_len and (self.engine != "sglang" or self._at_least("0.4.4.post3")):
                card["max_model_len"] = self.max_model_len
            return 200, {"object": "list", "data": [card]}
        return 404, {"detail": "Not Found"}

    def _too_long(self, items: List[Any]) -> Optional[str]:
        ids = [x for x in items if not isinstance(x, str)]
        self.longest = max([self.longest] + [len(x) for x in ids])
        if self.engine == "sglang" and self.max_req_input_len is not None:
            n = max((len(x) for x in ids), default=0)
            if n >= self.max_req_input_len:
                return f"Input length ({n} tokens) exceeds the maximum allowed length ({self.max_req_input_len} tokens)."
        if self.engine == "vllm" and self.max_model_len and any(len(x) > self.max_model_len for x in ids):
            return f"This model's maximum context length is {self.max_model_len} tokens."
        return None

    def post(self, path: str, body: Dict[str, Any]):
        self.requests.append({"path": path, "body": body})
        action = self.script.pop(0) if self.script else self.always
        if isinstance(action, int):
            return action, {"message": f"scripted {action}"}
        if action == "stall":
            time.sleep(self.stall)
        elif self.delay:
            time.sleep(self.delay)
        if action == "garbage":
            return 200, "not json at all"
        if action == "deep":  # well-formed JSON nested far past any parser's recursion
            return 200, "[" * 100_000 + "]" * 100_000
        if action == "huge":  # ~24 MB of valid JSON
            return 200, '{"data": [' + ", ".join(['{"index": 0, "data": [0.5]}'] * 900_000) + "]}"
        if action == "truncated":
            return 200, '{"object": "list", "data": [{"index": 0, "data": [1.'
        if action == "types":
            return 200, {"data": "x", "rewards": {"a": 1}, "embedding": None}
        items = body.get("input_ids") or body.get("text") or body.get("input") or []
        if self.poison is not None and any(self.poison(x) for x in items):
            return self.poison_status, {"message": "poisoned input"}
        if self.engine == "openrlhf" and path == "/get_reward":
            try:
                queries = parse_get_reward_request(body)
            except (ProtocolError, InvalidSampleError) as exc:
                return 400, {"detail": str(exc)}
            values = [reward_of(q) for q in queries]
            if self.version == "old":  # OpenRLHF before scores/extra_logs
                out = {"rewards": values}
            else:
                out = {**get_reward_response(values), "extra_logs": {"dummy_scores": values}}
            if action in ("nan", "inf", "short"):
                out["rewards"] = [math.nan if action == "nan" else math.inf] + values[1:] if action != "short" else values[:-1]
            return 200, out
        if self.engine == "sglang" and path == "/classify":
            try:
                _, items, one = parse_classify_request(body)
            except (ProtocolError, InvalidSampleError) as exc:
                return 400, {"error": {"message": str(exc)}}
            if self._too_long(items):
                return 400, {"error": {"message": self._too_long(items)}}
            values = [reward_of(x) for x in items]
            out = classify_response(values, [len(x) for x in items], one)
        elif self.engine == "vllm" and path == "/classify" and self._at_least("0.9"):
            items = body["input"]
            items = [items] if isinstance(items, str) or (items and isinstance(items[0], int)) else items
            if not self._at_least("0.15") and any(not isinstance(x, str) for x in items):
                return 400, {"message": "input: Input should be a valid string"}
            if self._too_long(items):
                return 400, {"message": self._too_long(items)}
            values = [reward_of(x) for x in items]
            out = {"object": "list", "data": [{"index": i, "probs": [v]} for i, v in enumerate(values)]}
        elif path == "/pooling" and self.engine in ("vllm", "lmdeploy"):
            items = body["input"]
            items = [items] if isinstance(items, str) or (items and isinstance(items[0], int)) else items
            if self._too_long(items):
                return 400, {"message": self._too_long(items)}
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
                raw = self.rfile.read(length)
                if len(raw) < length:  # the client went away (killed) before its request arrived: none came
                    return
                body = json.loads(raw or b"{}")
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


class BlackHole:
    """A loopback server that accepts connections, reads what comes and never answers.

    ``with BlackHole() as hole: hole.url``; ``connections`` counts what it accepted; ``stop``
    closes every socket (the client then sees its connection reset).
    """

    def __init__(self) -> None:
        import socket

        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(128)
        self._sock.settimeout(0.2)
        self._conns: List[Any] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._sock.getsockname()[1]}"

    @property
    def connections(self) -> int:
        return len(self._conns)

    def _serve(self) -> None:
        import socket

        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            conn.setblocking(False)
            self._conns.append(conn)
            for c in list(self._conns):  # drain what arrived, answer nothing
                try:
                    while c.recv(65536):
                        pass
                except (BlockingIOError, OSError):
                    pass

    def __enter__(self) -> "BlackHole":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        for c in self._conns:
            c.close()
        self._sock.close()
