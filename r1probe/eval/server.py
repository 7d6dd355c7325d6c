"""``r1probe serve``: a small OpenAI-compatible HTTP server over r1probe's HF engine.

Standard library only (``http.server``). Endpoints: ``GET /v1/models``, ``GET /health``,
``POST /v1/chat/completions`` (``messages``, ``max_tokens``, ``temperature``, ``seed``) and
``POST /v1/completions`` (``prompt`` already formatted). Requests are served one generation at
a time (a lock around the model); an optional steering plan applies to every request. Meant for
local evaluation and demos, not for production traffic.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from r1probe.models.generate import generate_texts


class _Handler(BaseHTTPRequestHandler):
    server_version = "r1probe-serve"
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):  # quiet unless asked
        if self.server.verbose:  # type: ignore[attr-defined]
            super().log_message(fmt, *args)

    def _send(self, code: int, obj: dict) -> None:
        body = json.dumps(obj, ensure_ascii=False).encode("utf-8")
        self.send_response(code)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):  # noqa: N802
        if self.path.rstrip("/") in ("/v1/models", "/models"):
            self._send(200, {"object": "list", "data": [{"id": self.server.model_name, "object": "model",  # type: ignore[attr-defined]
                                                         "owned_by": "r1probe"}]})
        elif self.path.rstrip("/") == "/health":
            self._send(200, {"status": "ok"})
        else:
            self._send(404, {"error": {"message": f"no route {self.path}"}})

    def do_POST(self):  # noqa: N802
        try:
            n = int(self.headers.get("Content-Length", "0"))
            req = json.loads(self.rfile.read(n).decode("utf-8") or "{}")
        except (ValueError, json.JSONDecodeError) as e:
            self._send(400, {"error": {"message": f"bad JSON: {e}"}})
            return
        path = self.path.rstrip("/")
        try:
            if path in ("/v1/chat/completions", "/chat/completions"):
                msgs = req.get("messages")
                if not isinstance(msgs, list) or not msgs:
                    self._send(400, {"error": {"message": "'messages' must be a non-empty list"}})
                    return
                prompt = self.server.lm.chat.render(msgs)  # type: ignore[attr-defined]
                text, ntok, nprompt = self.server.complete(prompt, req)  # type: ignore[attr-defined]
                choice = {"index": 0, "message": {"role": "assistant", "content": text},
                          "finish_reason": "length" if ntok >= self.server.max_tokens(req) else "stop"}  # type: ignore[attr-defined]
                obj = "chat.completion"
            elif path in ("/v1/completions", "/completions"):
                prompt = req.get("prompt")
                if not isinstance(prompt, str):
                    self._send(400, {"error": {"message": "'prompt' must be a string"}})
                    return
                text, ntok, nprompt = self.server.complete(prompt, req)  # type: ignore[attr-defined]
                choice = {"index": 0, "text": text,
                          "finish_reason": "length" if ntok >= self.server.max_tokens(req) else "stop"}  # type: ignore[attr-defined]
                obj = "text_completion"
            else:
                self._send(404, {"error": {"message": f"no route {self.path}"}})
                return
        except Exception as e:  # noqa: BLE001 - report to the client, keep serving
            self._send(500, {"error": {"message": f"{type(e).__name__}: {e}"}})
            return
        self._send(200, {"id": f"r1p-{uuid.uuid4().hex[:12]}", "object": obj, "created": int(time.time()),
                         "model": self.server.model_name, "choices": [choice],  # type: ignore[attr-defined]
                         "usage": {"prompt_tokens": nprompt, "completion_tokens": ntok,
                                   "total_tokens": nprompt + ntok}})


class R1ProbeServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, lm, host: str = "127.0.0.1", port: int = 8000, *, model_name: str = "r1probe",
                 plan=None, default_max_tokens: int = 256, verbose: bool = False):
        super().__init__((host, port), _Handler)
        self.lm, self.model_name, self.verbose = lm, model_name, verbose
        self.default_max_tokens = default_max_tokens
        self.lock = threading.Lock()
        if plan is not None and not hasattr(plan, "steps"):
            from r1probe.steering.plan import SteeringPlan

            plan = SteeringPlan.load(plan)
        self.plan = plan

    def max_tokens(self, req: dict) -> int:
        return int(req.get("max_tokens") or req.get("max_completion_tokens") or self.default_max_tokens)

    def complete(self, prompt: str, req: dict) -> tuple[str, int, int]:
        from r1probe.eval.engines import plan_context

        temp = float(req.get("temperature") or 0.0)
        mt = self.max_tokens(req)
        with self.lock, plan_context(self.lm, self.plan):
            text = generate_texts(self.lm, [prompt], max_new_tokens=mt, batch_size=1, do_sample=temp > 0,
                                  temperature=temp if temp > 0 else 1.0, seed=req.get("seed", 0))[0]
        return text, len(self.lm.chat.encode(text)), len(self.lm.chat.encode(prompt))

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"
