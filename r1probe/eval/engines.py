"""Engines that produce replies: ``hf`` (r1probe's loaded model, optional steering plan) and
``openai`` (any OpenAI-compatible server: vLLM, llama.cpp's server, ``r1probe serve``).

An engine turns chat requests ``(user_text, history)`` into raw completions. The ``hf`` engine
also scores option letters (MCQ log-likelihood) and teacher-forced NLL.
"""

from __future__ import annotations

import contextlib
import math
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

import torch

from r1probe.errors import R1ProbeError
from r1probe.models.chat import THINK_CLOSE, THINK_OPEN

#: batch of teacher-forced (scored) forwards when no batch size is given
SCORE_BATCH = 16

Request = tuple  # (user_text: str, history: list[dict] | None)


def plan_context(lm, plan):
    """A context manager applying a steering plan (a ``SteeringPlan`` or a path) to ``lm``; a no-op for None."""
    if plan is None:
        return contextlib.nullcontext()
    from r1probe.steering.plan import SteeringPlan
    from r1probe.steering.runtime import steering

    if not isinstance(plan, SteeringPlan):
        plan = SteeringPlan.load(plan)
    return steering(lm, plan)


class HFEngine:
    """Batched, length-sorted, left-padded generation with a model loaded by r1probe."""

    name = "hf"

    def __init__(self, lm, *, max_new_tokens: int = 256, batch_size: int | None = None, plan=None,
                 do_sample: bool = False, temperature: float | None = None, top_p: float = 1.0,
                 seed: int | None = 0, system: str | None = None):
        self.lm = lm
        self.max_new_tokens = max_new_tokens
        #: rows in flight when generating and the batch of scored forwards; None: the engine's default
        #: rows for the device (:data:`r1probe.models.engine.DEFAULT_ROWS`) and :data:`SCORE_BATCH`
        self.batch_size = batch_size
        self.plan = plan
        # temperature 0 is greedy; do_sample without a temperature samples at 1.0
        if temperature is None:
            temperature = 1.0 if do_sample else 0.0
        self.temperature, self.top_p, self.seed, self.system = float(temperature), float(top_p), seed, system
        self.do_sample = self.temperature > 0
        if plan is not None and not hasattr(plan, "steps"):
            from r1probe.steering.plan import SteeringPlan

            self.plan = SteeringPlan.load(plan)
        self.plan_path = plan if isinstance(plan, str) else None

    def for_sample(self, k: int) -> "HFEngine":
        """The same engine drawing sample ``k`` (seed offset by ``k``; greedy engines are unchanged)."""
        import copy

        e = copy.copy(self)
        e.seed = None if self.seed is None else self.seed + k
        return e

    @property
    def rows(self) -> int:
        """Rows the engine keeps in flight when generating."""
        from r1probe.models.engine import DEFAULT_ROWS

        return self.batch_size or DEFAULT_ROWS.get(str(self.lm.device).split(":")[0], 32)

    def chunk_size(self) -> int:
        """Items per runner chunk: twice the rows in flight, so finished rows are replaced until the
        chunk's tail (each chunk's records are written before the next starts: the resume point)."""
        return 2 * self.rows

    @property
    def thinks(self) -> bool:
        return bool(self.lm.chat.thinks)

    def format(self, text: str, history=None, close_think: bool = False) -> str:
        """The chat-formatted prompt; ``close_think`` puts the reply after an empty closed reasoning block for an R1
        template and for a model that opens one itself (``models.generate.replies_open_think``)."""
        from r1probe.models.generate import replies_open_think

        think = "closed" if close_think and replies_open_think(self.lm) else None
        return self.lm.chat.format(text, system=self.system, history=history, close_think=close_think, think=think)

    #: ``generate`` takes a ``done(index, text_so_far)`` callback (early stop, see ``eval.kinds``)
    supports_done = True

    def generate(self, requests: Sequence[Request], max_new_tokens: int | None = None, done=None) -> list[str]:
        from r1probe.models.engine import generate_texts

        texts = [self.format(t, h) for t, h in requests]
        return generate_texts(self.lm, texts, max_new_tokens=max_new_tokens or self.max_new_tokens,
                              batch_size=self.batch_size, temperature=self.temperature, top_p=self.top_p,
                              seed=self.seed, plan=self.plan, done=done)

    def shares_calls_with(self, other) -> bool:
        """True when ``other``'s generations can run in the same engine call as this engine's
        (:meth:`generate_many`): the same loaded model, plan, system prompt and sampling (the rows in
        flight are those of the engine that runs the shared call)."""
        same_plan = other.plan is self.plan or (self.plan_path is not None and other.plan_path == self.plan_path)
        return (isinstance(other, HFEngine) and other.lm is self.lm and same_plan
                and other.system == self.system
                and (other.temperature, other.top_p, other.seed) == (self.temperature, self.top_p, self.seed))

    def generate_many(self, calls: Sequence[tuple], progress=None) -> list[list[str]]:
        """Several :meth:`generate` calls ``(requests, max_new_tokens, done)`` as one call of the generation
        engine: every request keeps its own token budget and early-stop callback, and rows of one call
        take the places of finished rows of another. One list of replies per call; ``progress(n_finished,
        n_total)`` as replies finish."""
        from r1probe.models.engine import SamplingParams, generate

        texts, params, owner = [], [], []
        for c, (reqs, mnt, _done) in enumerate(calls):
            p = SamplingParams(max_new_tokens=mnt or self.max_new_tokens, temperature=self.temperature,
                               top_p=self.top_p, seed=self.seed)
            for j, (t, h) in enumerate(reqs):
                texts.append(self.format(t, h))
                params.append(p)
                owner.append((c, j))
        dones = [d for _, _, d in calls]

        def done(i: int, text: str) -> bool:
            c, j = owner[i]
            return dones[c] is not None and dones[c](j, text)

        comps = generate(self.lm, texts, params, plan=self.plan, batch_size=self.batch_size,
                         done=done if any(d is not None for d in dones) else None, progress=progress)
        out: list[list[str]] = [[] for _ in calls]
        for (c, _), cs in zip(owner, comps):
            out[c].append(cs[0].text)
        return out

    @torch.inference_mode()
    def _last_logits(self, texts: list[str]) -> torch.Tensor:
        from r1probe.models.generate import forward_overhead, left_pad, length_sorted_batches

        tok = self.lm.tokenizer
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        enc = [self.lm.chat.encode(t) for t in texts]
        out: list[torch.Tensor | None] = [None] * len(enc)
        with plan_context(self.lm, self.plan):
            for idx in length_sorted_batches([len(e) for e in enc], self.batch_size or SCORE_BATCH,
                                             overhead=forward_overhead(self.lm.device)):
                ids, mask = left_pad([enc[i] for i in idx], pad, self.lm.device)
                logits = self.lm.model(input_ids=ids, attention_mask=mask, logits_to_keep=1).logits[:, -1, :].float()
                lp = torch.log_softmax(logits, -1).cpu()
                for r, i in enumerate(idx):
                    out[i] = lp[r]
        return torch.stack(out)  # type: ignore[arg-type]

    def choice_logprobs(self, requests: Sequence[Request], letters: Sequence[Sequence[str]],
                        prefix: str = "答案：(") -> list[list[float]]:
        """Log-probability of each option letter as the next token after the reply prefix
        (the reasoning block is closed first for R1-style models)."""
        texts = [self.format(t, h, close_think=True) + prefix for t, h in requests]
        lp = self._last_logits(texts)
        out = []
        for row, ls in zip(lp, letters):
            ids = [self.lm.chat.encode(x)[0] for x in ls]
            out.append([float(row[i]) for i in ids])
        return out

    @torch.inference_mode()
    def target_nll(self, requests: Sequence[Request], targets: Sequence[str]) -> list[float]:
        """Teacher-forced mean NLL (nats/token) of each ``target`` as the reply to its request."""
        from r1probe.models.generate import forward_overhead, left_pad, length_sorted_batches

        tok = self.lm.tokenizer
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        pairs = []
        for (t, h), y in zip(requests, targets):
            p = self.lm.chat.encode(self.format(t, h, close_think=True))
            pairs.append((p, self.lm.chat.encode(y)))
        out = [math.nan] * len(pairs)
        with plan_context(self.lm, self.plan) as handle:
            for idx in length_sorted_batches([len(p) + len(y) for p, y in pairs], self.batch_size or SCORE_BATCH,
                                             overhead=forward_overhead(self.lm.device)):
                seqs = [pairs[i][0] + pairs[i][1] for i in idx]
                ids, mask = left_pad(seqs, pad, self.lm.device)
                if handle is not None:  # a plan sees the target as generated tokens, the prompt as the prompt
                    handle.generated_from = [ids.shape[1] - len(pairs[i][1]) for i in idx]
                # left padding puts every target at the end: only the last k+1 positions need logits
                # ([B, k+1, V] instead of [B, L, V]: the vocabulary makes the full tensor GBs)
                k = max(len(pairs[i][1]) for i in idx)
                logits = self.lm.model(input_ids=ids, attention_mask=mask, logits_to_keep=k + 1).logits
                for r, i in enumerate(idx):
                    ny = len(pairs[i][1])
                    lg = logits[r, logits.shape[1] - 1 - ny:logits.shape[1] - 1].float()  # predicts the last ny tokens
                    out[i] = float(torch.nn.functional.cross_entropy(lg, ids[r, ids.shape[1] - ny:]))
        return out

    def gates_open(self, requests: Sequence[Request], close_think: bool = False) -> list[bool] | None:
        """Per request, whether a gate of the engine's plan opens on its prompt (formatted as :meth:`format`
        with ``close_think``); None without a plan whose every step is conditional
        (:func:`r1probe.steering.runtime.prompt_gates`). A request whose gates stay closed is answered by the
        unedited model."""
        if self.plan is None:
            return None
        from r1probe.models.engine import pad_id
        from r1probe.steering.runtime import prompt_gates, untouched_by

        if not untouched_by(self.plan):
            return None
        enc = [self.lm.chat.encode(self.format(t, h, close_think=close_think)) for t, h in requests]
        return prompt_gates(self.lm, self.plan, enc, batch_size=self.batch_size or SCORE_BATCH, pad_id=pad_id(self.lm))

    def describe(self) -> dict:
        from r1probe.models import model_provenance

        d = {"engine": "hf", "max_new_tokens": self.max_new_tokens, "batch_size": self.batch_size,
             "do_sample": self.do_sample}
        if self.do_sample:
            d.update(temperature=self.temperature, top_p=self.top_p, seed=self.seed)
        if self.system is not None:
            d["system"] = self.system
        try:
            d["model"] = model_provenance(self.lm)
        except Exception as e:  # noqa: BLE001 - provenance is best effort for odd models
            d["model"] = {"error": str(e)}
        if self.plan is not None:
            d["plan"] = {"path": self.plan_path, "plan": self.plan.to_dict() if hasattr(self.plan, "to_dict") else None}
        return d


def parse_endpoint(spec: str) -> tuple[str, str | None]:
    """``URL#MODEL`` → (base URL ending before ``/v1``, model or None)."""
    url, _, model = spec.partition("#")
    url = url.rstrip("/")
    for tail in ("/chat/completions", "/completions"):
        if url.endswith(tail):
            url = url[: -len(tail)]
    if url.endswith("/v1"):
        url = url[:-3]
    return url, (model or None)


class OpenAIEngine:
    """Chat completions from an OpenAI-compatible server (vLLM, llama.cpp's server, ``r1probe serve``)
    through the official ``openai`` client, with bounded concurrency.

    Retries (connection errors, 408/409/429/5xx, with backoff) and timeouts are the client's
    (``retries`` = its ``max_retries``). With no model named the server's first listed model is
    used. A ``reasoning_content`` field (vLLM's reasoning parser) is folded back into
    ``<think>...</think>`` so replies split into reasoning and answer the same way as local ones.
    """

    name = "openai"

    def __init__(self, url: str, model: str | None = None, *, max_new_tokens: int = 256, concurrency: int = 8,
                 temperature: float = 0.0, top_p: float = 1.0, api_key: str | None = None, timeout: float = 600.0,
                 retries: int = 5, thinks: bool | None = None, seed: int | None = 0, system: str | None = None,
                 http_client=None):
        import openai

        self.base, m = parse_endpoint(url)
        self._model = model or m
        self.max_new_tokens, self.concurrency = max_new_tokens, concurrency
        self.temperature, self.top_p, self.seed, self.system = temperature, top_p, seed, system
        self.timeout, self.retries = timeout, retries
        self._thinks = thinks
        self.client = openai.OpenAI(base_url=self.base + "/v1", api_key=api_key or "EMPTY", timeout=timeout,
                                    max_retries=retries, http_client=http_client)

    @property
    def thinks(self) -> bool:
        return bool(self._thinks)

    @property
    def model(self) -> str:
        if self._model is None:
            try:
                listed = self.client.models.list().data
            except Exception as e:  # noqa: BLE001
                raise R1ProbeError(f"{self.base}: cannot list models ({_openai_error(e)})") from None
            if not listed:
                raise R1ProbeError(f"{self.base}: the server lists no model; give one as URL#MODEL")
            self._model = listed[0].id
        return self._model

    def for_sample(self, k: int) -> "OpenAIEngine":
        """The same engine drawing sample ``k`` (seed offset by ``k``)."""
        import copy

        e = copy.copy(self)
        e.seed = None if self.seed is None else self.seed + k
        return e

    def chat(self, messages: list[dict], max_new_tokens: int | None = None) -> str:
        kw = {"model": self.model, "messages": messages, "max_tokens": max_new_tokens or self.max_new_tokens,
              "temperature": self.temperature}
        if self.top_p != 1.0:
            kw["top_p"] = self.top_p
        if self.seed is not None:
            kw["seed"] = self.seed
        try:
            r = self.client.chat.completions.create(**kw)
        except Exception as e:  # noqa: BLE001 - one line for the user, whatever the client raised
            raise R1ProbeError(f"{self.base}: {_openai_error(e)}") from None
        try:
            msg = r.choices[0].message
        except (AttributeError, IndexError, TypeError):
            raise R1ProbeError(f"{self.base}: unexpected reply {str(r)[:200]}") from None
        content = msg.content or ""
        extra = getattr(msg, "model_extra", None) or {}
        rc = extra.get("reasoning_content") or extra.get("reasoning")
        if rc:
            return f"{THINK_OPEN}{rc}{THINK_CLOSE}{content}"
        return content

    def generate(self, requests: Sequence[Request], max_new_tokens: int | None = None) -> list[str]:
        from r1probe.models.chat import to_messages

        msgs = [to_messages(t, system=self.system, history=h) for t, h in requests]
        self.model  # resolve once, before the threads
        with ThreadPoolExecutor(max_workers=max(1, self.concurrency)) as ex:
            return list(ex.map(lambda m: self.chat(m, max_new_tokens), msgs))

    def choice_logprobs(self, *a, **k):
        raise R1ProbeError("the openai engine cannot score option log-likelihoods; use the -gen MCQ benchmarks")

    def target_nll(self, *a, **k):
        raise R1ProbeError("the openai engine cannot compute teacher-forced NLL; use --engine hf")

    def describe(self) -> dict:
        try:
            model = self.model
        except R1ProbeError:
            model = self._model
        d = {"engine": "openai", "url": self.base, "model": model, "max_new_tokens": self.max_new_tokens,
             "concurrency": self.concurrency, "temperature": self.temperature}
        if self.top_p != 1.0:
            d["top_p"] = self.top_p
        if self.system is not None:
            d["system"] = self.system
        return d


def _openai_error(e: Exception) -> str:
    """One line for an exception raised by the ``openai`` client."""
    import openai

    if isinstance(e, openai.APIStatusError):
        msg = e.message
        body = e.body if isinstance(e.body, dict) else None
        if body is not None:
            inner = body.get("error", body)
            if isinstance(inner, dict) and inner.get("message"):
                msg = inner["message"]
        return f"HTTP {e.status_code}: {msg}"
    if isinstance(e, openai.APITimeoutError):
        return "no answer before the timeout"
    if isinstance(e, openai.APIConnectionError):
        cause = e.__cause__ or e
        return f"no connection ({type(cause).__name__}: {cause})"
    return f"{type(e).__name__}: {e}"
