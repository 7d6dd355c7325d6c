"""``r1probe serve``: an OpenAI-compatible HTTP server (FastAPI + uvicorn) over r1probe's generation engine.

Endpoints (all under ``/v1``; ``/health`` is open):

- ``GET /v1/models`` and ``GET /v1/models/{id}``: the one served model;
- ``POST /v1/chat/completions``: ``messages`` rendered with the model's chat template;
- ``POST /v1/completions``: ``prompt`` (a string or a list of strings) used as is.

Both completion endpoints take ``model`` (must be the served name, else 404), ``max_tokens``
(``max_completion_tokens``), ``temperature`` (0 is greedy), ``top_p``, ``seed``, ``n``, ``stop``
and ``stream`` (server-sent events, ``stream_options.include_usage``). Bad requests get a 400 with
OpenAI's error shape ``{"error": {"message", "type", "param", "code"}}``; with an API key set,
a request without ``Authorization: Bearer KEY`` gets a 401.

``usage.prompt_tokens`` is the length of the tokenized prompt and ``usage.completion_tokens`` the
number of tokens the engine generated (summed over the choices), at most ``max_tokens`` each.

Requests arriving together are batched: a worker thread collects requests for a few
milliseconds and calls :func:`r1probe.models.engine.generate` once for all of them. An optional
steering plan applies to every request.
"""

from __future__ import annotations

import json
import queue
import socket
import threading
import time
import uuid
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from r1probe.errors import R1ProbeError

#: roles a chat message may have
ROLES = ("system", "developer", "user", "assistant", "tool")


# -- request schemas ---------------------------------------------------------------------------------
class _Common(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str
    max_tokens: int | None = Field(default=None, gt=0)
    max_completion_tokens: int | None = Field(default=None, gt=0)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    seed: int | None = None
    n: int = Field(default=1, ge=1, le=16)
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: dict | None = None
    logprobs: Any = None
    top_logprobs: int | None = None
    user: str | None = None

    @field_validator("stop")
    @classmethod
    def _stop(cls, v):
        if isinstance(v, list):
            if len(v) > 4:
                raise ValueError("at most 4 stop sequences")
            if any(not isinstance(s, str) or not s for s in v):
                raise ValueError("stop sequences must be non-empty strings")
        elif v == "":
            raise ValueError("stop sequences must be non-empty strings")
        return v

    def stops(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)


class _ContentPart(BaseModel):
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[_ContentPart] | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text for p in self.content)


class ChatRequest(_Common):
    messages: list[ChatMessage] = Field(min_length=1)


class CompletionRequest(_Common):
    prompt: str | list[str]
    echo: bool = False
    best_of: int | None = None
    suffix: str | None = None

    @field_validator("prompt")
    @classmethod
    def _prompt(cls, v):
        if isinstance(v, list) and not v:
            raise ValueError("prompt must not be an empty list")
        return v


# -- errors --------------------------------------------------------------------------------------------
class APIError(Exception):
    """An error answered with OpenAI's error shape."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


# -- the batcher ---------------------------------------------------------------------------------------
@dataclass
class _Job:
    prompts: list[str]
    params: list  # SamplingParams, one per prompt
    future: Future = field(default_factory=Future)
    on_text: Any = None  # callable(row, text_so_far) or None


class Batcher:
    """Collects requests for ``window_s`` seconds (up to ``max_prompts`` prompts) and generates them
    in one :func:`r1probe.models.engine.generate` call on a worker thread."""

    def __init__(self, lm, plan=None, *, window_s: float = 0.01, max_prompts: int = 32, batch_size: int | None = None):
        self.lm, self.plan, self.window_s, self.max_prompts, self.batch_size = lm, plan, window_s, max_prompts, batch_size
        self._q: queue.Queue[_Job | None] = queue.Queue()
        self.calls = 0  # engine calls made (tests read it)
        self._thread = threading.Thread(target=self._loop, name="r1probe-batcher", daemon=True)
        self._thread.start()

    def submit(self, prompts: list[str], params: list, on_text=None) -> Future:
        job = _Job(list(prompts), list(params), on_text=on_text)
        self._q.put(job)
        return job.future

    def close(self) -> None:
        self._q.put(None)

    def _loop(self) -> None:
        while True:
            job = self._q.get()
            if job is None:
                return
            jobs = [job]
            n = len(job.prompts)
            deadline = time.monotonic() + self.window_s
            stop = False
            while n < self.max_prompts:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    nxt = self._q.get(timeout=left)
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                jobs.append(nxt)
                n += len(nxt.prompts)
            self._run(jobs)
            if stop:
                return

    def _run(self, jobs: list[_Job]) -> None:
        from r1probe.models.engine import generate

        prompts, params, owner = [], [], []
        for j in jobs:
            for r, (p, sp) in enumerate(zip(j.prompts, j.params)):
                prompts.append(p)
                params.append(sp)
                owner.append((j, r))

        def done(i, text):
            j, r = owner[i]
            if j.on_text is not None:
                try:
                    j.on_text(r, text)
                except Exception:  # noqa: BLE001 - a client gone away must not stop the batch
                    pass
            return False

        try:
            self.calls += 1
            out = generate(self.lm, prompts, params, plan=self.plan, batch_size=self.batch_size,
                           done=done if any(j.on_text is not None for j in jobs) else None)
        except Exception as e:  # noqa: BLE001 - every waiting request gets the error
            for j in jobs:
                if not j.future.done():
                    j.future.set_exception(e)
            return
        k = 0
        for j in jobs:
            j.future.set_result([out[k + r][0] for r in range(len(j.prompts))])
            k += len(j.prompts)


# -- the app --------------------------------------------------------------------------------------------
def _err(e: APIError):
    from fastapi.responses import JSONResponse

    return JSONResponse(e.body(), status_code=e.status)


def _validation_message(errors) -> tuple[str, str | None]:
    if not errors:
        return "invalid request", None
    e = errors[0]
    loc = [str(x) for x in e.get("loc", ()) if x not in ("body",)]
    param = ".".join(loc) or None
    return (f"{param}: {e.get('msg', 'invalid')}" if param else e.get("msg", "invalid request")), (loc[0] if loc else None)


class ServeState:
    """What the app serves: the model, its name, the batcher and the defaults."""

    def __init__(self, lm, model_name: str, *, plan=None, default_max_tokens: int = 256, api_key: str | None = None,
                 window_s: float = 0.01, max_prompts: int = 32, batch_size: int | None = None):
        if plan is not None and not hasattr(plan, "steps"):
            from r1probe.steering.plan import SteeringPlan

            plan = SteeringPlan.load(plan)
        self.lm, self.model_name, self.plan = lm, model_name, plan
        self.default_max_tokens, self.api_key = default_max_tokens, api_key
        self.created = int(time.time())
        self.batcher = Batcher(lm, plan, window_s=window_s, max_prompts=max_prompts, batch_size=batch_size)
        cfg = getattr(getattr(lm, "model", None), "config", None)
        self.context = getattr(cfg, "max_position_embeddings", None)

    def model_card(self) -> dict:
        return {"id": self.model_name, "object": "model", "created": self.created, "owned_by": "r1probe"}


def create_app(state: ServeState):
    """The FastAPI application serving ``state``."""
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, StreamingResponse

    app = FastAPI(title="r1probe serve", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.r1 = state

    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError):
        return _err(exc)

    @app.exception_handler(RequestValidationError)
    async def _bad_request(request: Request, exc: RequestValidationError):
        msg, param = _validation_message(exc.errors())
        return _err(APIError(400, msg, param=param))

    @app.exception_handler(404)
    async def _not_found(request: Request, exc):
        return _err(APIError(404, f"no route {request.method} {request.url.path}", code="not_found"))

    @app.exception_handler(405)
    async def _not_allowed(request: Request, exc):
        return _err(APIError(405, f"method {request.method} not allowed on {request.url.path}"))

    @app.middleware("http")
    async def _auth(request: Request, call_next):
        if state.api_key and request.url.path.startswith("/v1"):
            auth = request.headers.get("authorization", "")
            if auth != f"Bearer {state.api_key}":
                return _err(APIError(401, "invalid or missing API key (Authorization: Bearer KEY)",
                                     code="invalid_api_key"))
        return await call_next(request)

    @app.get("/health")
    def health():
        return {"status": "ok"}

    @app.get("/v1/models")
    def models():
        return {"object": "list", "data": [state.model_card()]}

    @app.get("/v1/models/{model_id:path}")
    def model(model_id: str):
        _check_model(state, model_id)
        return state.model_card()

    @app.post("/v1/chat/completions")
    def chat(req: ChatRequest):
        _check_model(state, req.model)
        msgs = [{"role": "system" if m.role == "developer" else m.role, "content": m.text()} for m in req.messages]
        try:
            prompt = state.lm.chat.render(msgs)
        except Exception as e:  # noqa: BLE001 - a template refusing the messages is the client's error
            raise APIError(400, f"messages: the chat template rejected them ({type(e).__name__}: {e})",
                           param="messages") from e
        return _respond(state, req, [prompt], chat=True)

    @app.post("/v1/completions")
    def completions(req: CompletionRequest):
        _check_model(state, req.model)
        if req.echo:
            raise APIError(400, "echo is not supported", param="echo")
        if req.suffix:
            raise APIError(400, "suffix is not supported", param="suffix")
        if req.best_of not in (None, 1, req.n):
            raise APIError(400, "best_of is not supported", param="best_of")
        prompts = [req.prompt] if isinstance(req.prompt, str) else list(req.prompt)
        return _respond(state, req, prompts, chat=False)

    def _respond(state: ServeState, req: _Common, prompts: list[str], chat: bool):
        if req.logprobs or req.top_logprobs:
            raise APIError(400, "logprobs are not supported by r1probe serve", param="logprobs")
        from r1probe.models.engine import SamplingParams

        mt = req.max_completion_tokens or req.max_tokens or state.default_max_tokens
        n_prompt = [len(state.lm.chat.encode(p)) for p in prompts]
        if state.context:
            for i, k in enumerate(n_prompt):
                if k + mt > state.context:
                    raise APIError(400, f"prompt {i}: {k} prompt tokens + max_tokens {mt} exceed the model's "
                                        f"context of {state.context} tokens", param="max_tokens",
                                   code="context_length_exceeded")
        temp = 0.0 if req.temperature is None else float(req.temperature)
        top_p = 1.0 if req.top_p is None else float(req.top_p)
        rows, params = [], []
        for p in prompts:
            for j in range(req.n):
                seed = None if req.seed is None else req.seed + j
                rows.append(p)
                params.append(SamplingParams(max_new_tokens=mt, temperature=temp, top_p=top_p, seed=seed,
                                             stop=req.stops(), n=1))
        rid = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]
        created = int(time.time())
        if req.stream:
            include_usage = bool((req.stream_options or {}).get("include_usage"))
            return StreamingResponse(_stream(state, rid, created, rows, params, n_prompt, req.n, chat, include_usage,
                                             max(map(len, req.stops()), default=0)),
                                     media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        try:
            outs = state.batcher.submit(rows, params).result()
        except Exception as e:  # noqa: BLE001
            return JSONResponse(APIError(500, f"generation failed: {type(e).__name__}: {e}",
                                         type="server_error").body(), status_code=500)
        choices = []
        for i, c in enumerate(outs):
            if chat:
                choices.append({"index": i, "message": {"role": "assistant", "content": c.text},
                                "logprobs": None, "finish_reason": c.finish_reason})
            else:
                choices.append({"index": i, "text": c.text, "logprobs": None, "finish_reason": c.finish_reason})
        pt = sum(n_prompt)
        ct = sum(min(len(c.token_ids), mt) for c in outs)
        return {"id": rid, "object": "chat.completion" if chat else "text_completion", "created": created,
                "model": state.model_name, "choices": choices, "system_fingerprint": None,
                "usage": {"prompt_tokens": pt, "completion_tokens": ct, "total_tokens": pt + ct}}

    return app


def _check_model(state: ServeState, name: str) -> None:
    if name != state.model_name:
        raise APIError(404, f"The model `{name}` does not exist (this server serves `{state.model_name}`).",
                       param="model", code="model_not_found")


def _stream(state: ServeState, rid: str, created: int, rows: list[str], params: list, n_prompt: list[int], n: int,
            chat: bool, include_usage: bool, hold: int):
    """Server-sent events: text deltas as the engine reports them, then each choice's finish reason."""
    events: queue.Queue = queue.Queue()
    sent = [""] * len(rows)

    def chunk(choices, usage=None):
        obj = {"id": rid, "object": "chat.completion.chunk" if chat else "text_completion", "created": created,
               "model": state.model_name, "choices": choices}
        if include_usage:
            obj["usage"] = usage
        return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"

    def piece(i, text, finish=None):
        if chat:
            delta = {"content": text} if text or finish is None else {}
            return {"index": i, "delta": delta, "logprobs": None, "finish_reason": finish}
        return {"index": i, "text": text, "logprobs": None, "finish_reason": finish}

    def on_text(i, text):
        # hold back what may still become a stop string or an incomplete character
        safe = text[:max(0, len(text) - hold)] if hold else text
        safe = safe.rstrip("\ufffd")
        if len(safe) > len(sent[i]) and safe.startswith(sent[i]):
            events.put(("delta", i, safe))

    fut = state.batcher.submit(rows, params, on_text=on_text)
    fut.add_done_callback(lambda f: events.put(("done", None, None)))
    if chat:
        yield chunk([{"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                      "finish_reason": None} for i in range(len(rows))])
    while True:
        kind, i, text = events.get()
        if kind == "delta":
            if len(text) > len(sent[i]) and text.startswith(sent[i]):
                d, sent[i] = text[len(sent[i]):], text
                yield chunk([piece(i, d)])
            continue
        break
    try:
        outs = fut.result()
    except Exception as e:  # noqa: BLE001
        err = APIError(500, f"generation failed: {type(e).__name__}: {e}", type="server_error").body()
        yield f"data: {json.dumps(err)}\n\n"
        yield "data: [DONE]\n\n"
        return
    mt = params[0].max_new_tokens if params else 0
    for i, c in enumerate(outs):
        rest = c.text[len(sent[i]):] if c.text.startswith(sent[i]) else ""
        if rest:
            yield chunk([piece(i, rest)])
        yield chunk([piece(i, "", c.finish_reason)])
    if include_usage:
        pt = sum(n_prompt)
        ct = sum(min(len(c.token_ids), mt) for c in outs)
        obj = {"id": rid, "object": "chat.completion.chunk" if chat else "text_completion", "created": created,
               "model": state.model_name, "choices": [],
               "usage": {"prompt_tokens": pt, "completion_tokens": ct, "total_tokens": pt + ct}}
        yield f"data: {json.dumps(obj)}\n\n"
    yield "data: [DONE]\n\n"


# -- running it -----------------------------------------------------------------------------------------
class Server:
    """A uvicorn server for ``state`` on ``host:port`` (port 0 picks a free one); ``url`` is known at once."""

    def __init__(self, state: ServeState, host: str = "127.0.0.1", port: int = 8000, *, verbose: bool = False):
        import uvicorn

        self.state = state
        try:
            self.sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.sock.bind((host, port))
        except OSError as e:
            raise R1ProbeError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
        self.host, self.port = host, self.sock.getsockname()[1]
        config = uvicorn.Config(create_app(state), log_level="info" if verbose else "warning",
                                access_log=verbose, lifespan="off")
        self.server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def run(self) -> None:
        """Serve until interrupted (blocks)."""
        try:
            self.server.run(sockets=[self.sock])
        finally:
            self.close()

    def start(self) -> "Server":
        """Serve on a daemon thread; returns once the server accepts connections."""
        self._thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self._thread.start()
        for _ in range(500):
            if self.server.started:
                break
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.close()

    def close(self) -> None:
        self.state.batcher.close()
        try:
            self.sock.close()
        except OSError:
            pass


def serve(lm, host: str = "127.0.0.1", port: int = 8000, *, model_name: str = "r1probe", plan=None,
          default_max_tokens: int = 256, api_key: str | None = None, verbose: bool = False,
          window_s: float = 0.01, max_prompts: int = 32, batch_size: int | None = None) -> Server:
    """A :class:`Server` for ``lm`` (not started: call ``.run()`` or ``.start()``)."""
    state = ServeState(lm, model_name, plan=plan, default_max_tokens=default_max_tokens, api_key=api_key,
                       window_s=window_s, max_prompts=max_prompts, batch_size=batch_size)
    return Server(state, host, port, verbose=verbose)
