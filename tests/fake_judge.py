"""A loopback fake of an OpenAI-compatible chat-completions server, for the judge's tests.

``judge(body) -> reply`` decides each reply: a string (the content), or a dict
``{token: probability}`` (a one-token reply whose ``top_logprobs`` are those, the
most likely token as its content). ``script`` queues what the next chat request
gets instead: an HTTP status (``(429, retry_after)`` for one with a header),
``"stall"`` (no answer for ``stall`` seconds), ``"garbage"`` (not JSON) or a
string (that reply). ``requests`` keeps every chat body, ``times`` when each came.
"""

from __future__ import annotations

import json
import math
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Dict, List, Optional


def default_judge(body: Dict[str, Any]) -> Any:
    return '{"score": 7}'


class FakeJudge:
    """``with FakeJudge(judge) as fake: fake.url``."""

    def __init__(
        self, judge: Callable[[Dict[str, Any]], Any] = default_judge, *, owned_by: str = "vllm",
        version: Optional[str] = "0.32.0", model: str = "judge", stall: float = 3.0, max_model_len: int = 4096,
    ) -> None:
        self.judge = judge
        self.owned_by = owned_by
        self.version = version
        self.model = model
        self.stall = stall
        self.max_model_len = max_model_len
        self.script: List[Any] = []
        self.requests: List[Dict[str, Any]] = []
        self.raw: List[bytes] = []
        self.times: List[float] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._server.handle_error = lambda *a: None  # a client that gave up (a timeout test): not our failure
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> "FakeJudge":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._server.shutdown()
        self._server.server_close()

    def answer(self, body: Dict[str, Any]) -> Dict[str, Any]:
        """A chat.completion body for ``body``, with ``n`` replies."""
        choices = []
        for k in range(int(body.get("n", 1))):
            reply = self.judge({**body, "_choice": k})
            if isinstance(reply, dict):  # a one-token verdict: its next-token distribution
                tops = sorted(reply.items(), key=lambda kv: -kv[1])[: body.get("top_logprobs") or 0]
                lp = [{"token": t, "logprob": math.log(p) if p > 0 else -9999.0, "bytes": list(t.encode())}
                      for t, p in tops]
                content = tops[0][0] if tops else ""
                logprobs = {"content": [{"token": content, "logprob": lp[0]["logprob"] if lp else 0.0,
                                         "bytes": list(content.encode()), "top_logprobs": lp}]}
                choices.append({"index": k, "message": {"role": "assistant", "content": content},
                                "logprobs": logprobs if body.get("logprobs") else None, "finish_reason": "stop"})
            else:
                finish = "length" if reply.endswith("<cut>") else "stop"
                choices.append({"index": k, "message": {"role": "assistant", "content": reply.replace("<cut>", "")},
                                "logprobs": None, "finish_reason": finish})
        return {"id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": body.get("model"),
                "choices": choices, "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}

    def _handler(self) -> type:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, status: int, payload: Any, headers: Optional[Dict[str, str]] = None) -> None:
                raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(raw)

            def do_GET(self) -> None:
                if self.path == "/v1/models":
                    card = {"id": fake.model, "object": "model", "owned_by": fake.owned_by,
                            "max_model_len": fake.max_model_len}
                    self._send(200, {"object": "list", "data": [card]})
                elif self.path == "/version" and fake.version:
                    self._send(200, {"version": fake.version})
                else:
                    self._send(404, {"error": {"message": "not found"}})

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.path != "/v1/chat/completions":
                    self._send(404, {"error": {"message": "not found"}})
                    return
                body = json.loads(raw)
                with fake._lock:
                    fake.requests.append(body)
                    fake.raw.append(raw)
                    fake.times.append(time.monotonic())
                    action = fake.script.pop(0) if fake.script else None
                if action == "stall":
                    time.sleep(fake.stall)
                    action = None
                if isinstance(action, tuple):
                    status, after = action
                    self._send(status, {"error": {"message": "slow down"}}, {"Retry-After": str(after)})
                elif isinstance(action, int):
                    self._send(action, {"error": {"message": f"scripted {action}"}})
                elif action == "garbage":
                    self._send(200, b"<html>oops</html>")
                elif isinstance(action, str):
                    self._send(200, fake.answer({**body, "n": 1}) | {"choices": [
                        {"index": 0, "message": {"role": "assistant", "content": action}, "finish_reason": "stop"}]})
                else:
                    self._send(200, fake.answer(body))

        return Handler
