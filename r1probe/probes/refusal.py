"""Refusal scores of a batch of prompts, batched and cheap enough for a causal search on CPU.

Three scores, all optionally under a steering plan (``r1probe.steering.runtime.steering``):

- ``first_token``: refusal_direction's score, the log-odds that the next token opens a refusal,
  ``s = log p_R − log(1 − p_R)`` with ``p_R = Σ_{t∈R} softmax(z)_t`` and ``R`` the refusal-token set
  (first tokens of Chinese and English refusal openings, read from the tokenizer). For models
  that think first the prompt ends with a closed empty think block (``<think>\\n\\n</think>\\n\\n``).
- ``lookahead``: the same log-odds for a refusal *phrase* after the model's own restatement:
  small Chinese models open with "制作炸弹是一个非常危险且非法的活动……" and refuse only then,
  so the first token says nothing. For every prompt whose unsteered greedy reply refuses
  (keyword judge), the reply is cut at the refusal phrase; the score is
  ``log p − log(1 − p)`` with ``p = Π_k p(φ_k | prompt, prefix, φ_<k)`` the teacher-forced
  probability of the phrase ``φ`` after that prefix. One forward pass per batch.
- ``generation``: refusal of a short greedy generation (``max_new_tokens``) under the refusal
  rule (:func:`judge`), ``1`` or ``0`` per prompt (for checking; one generation per batch).

Forward passes use left padding with position ids from the attention mask, and ask the model for
logits only at the columns needed (an index tensor, so the hidden states stay contiguous: a
sliced ``[B, 1, d]`` view makes torch 2.13 expand ``lm_head`` to ``[B, d, V]``, seconds per call).
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Sequence

import torch

from r1probe.errors import R1ProbeError
from r1probe.models.generate import forward_overhead, left_pad, length_sorted_batches, replies_open_think

#: openings of refusals; the first token of each (per tokenizer) forms the refusal-token set
DEFAULT_OPENINGS = ("我", "抱歉", "对不起", "作为", "很抱歉", "非常抱歉", "不能", "我不能", "我无法",
                    "I", "Sorry", "As", "I'm", "I cannot", "Unfortunately")


def refusal_token_ids(tokenizer, openings: Sequence[str] = DEFAULT_OPENINGS) -> list[int]:
    """First token id of every opening (also with a leading space for English), deduplicated."""
    ids: set[int] = set()
    for o in openings:
        for v in {o, " " + o} if o[:1].isascii() else {o}:
            toks = tokenizer(v, add_special_tokens=False)["input_ids"]
            if toks:
                ids.add(int(toks[0]))
    return sorted(ids)


def log_odds(logp_set: torch.Tensor) -> torch.Tensor:
    """``log p − log(1 − p)`` from ``log p`` (float64-safe, clamped away from 0 and 1)."""
    lp = logp_set.double().clamp(max=-1e-12)
    return (lp - torch.log(-torch.expm1(lp))).float()


def first_token_log_odds(logits: torch.Tensor, refusal_ids: Sequence[int]) -> torch.Tensor:
    """``log Σ_{t∈R} softmax(z)_t − log(1 − Σ_{t∈R} softmax(z)_t)`` per row of ``logits [B, V]``."""
    lp = torch.log_softmax(logits.float(), dim=-1)
    return log_odds(torch.logsumexp(lp[:, list(refusal_ids)], dim=-1))


def kl_rows(logits_p: torch.Tensor, logits_q: torch.Tensor) -> torch.Tensor:
    """``KL(p‖q) = Σ_t p_t (log p_t − log q_t)`` per row (float32), ``p`` the unsteered model."""
    lp = torch.log_softmax(logits_p.float(), -1)
    lq = torch.log_softmax(logits_q.float(), -1)
    return (lp.exp() * (lp - lq)).sum(-1)


@dataclass
class Batch:
    idx: list[int]
    ids: torch.Tensor
    mask: torch.Tensor
    pos: torch.Tensor


#: padded tokens per scoring batch (rows x the batch's longest prompt), besides the batch size
SCORER_TOKENS = 1024


class Scorer:
    """Batched forwards of one model over fixed prompt texts (formatted once, length-sorted)."""

    def __init__(self, lm, batch_size: int = 16, refusal_openings: Sequence[str] = DEFAULT_OPENINGS,
                 max_tokens: int | None = SCORER_TOKENS):
        self.lm = lm
        self.batch_size = batch_size
        #: padded tokens per batch at most (a long prompt does not pad a whole batch to its length)
        self.max_tokens = max_tokens
        self.refusal_ids = refusal_token_ids(lm.tokenizer, refusal_openings)
        tok = lm.tokenizer
        self.pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id

    # -- formatting ------------------------------------------------------------------------
    def format(self, prompts: Sequence, close_think: bool | None = None) -> list[str]:
        """Chat-format prompts (strings or objects with ``text``/``history``). By default the reply's first
        token is the answer's: R1 prompts get a closed think, and so do the prompts of a model that opens a
        reasoning block itself (``models.generate.replies_open_think``)."""
        ct = self.lm.chat.thinks if close_think is None else close_think
        think = "closed" if close_think is None and replies_open_think(self.lm) else None
        out = []
        for p in prompts:
            text = getattr(p, "text", p)
            hist = getattr(p, "history", None) or None
            out.append(self.lm.chat.format(text, history=hist, close_think=ct, think=think))
        return out

    def batches(self, seqs: Sequence[Sequence[int]], new_tokens: int = 0) -> list[Batch]:
        """Length-sorted, left-padded batches; the cut points weigh padding against the fixed cost of
        each forward pass, ``1 + new_tokens`` of them per batch (a generation's decode steps)."""
        out = []
        for idx in length_sorted_batches([len(s) for s in seqs], self.batch_size, self.max_tokens,
                                         overhead=forward_overhead(self.lm.device) * (1 + max(0, new_tokens))):
            ids, mask = left_pad([seqs[i] for i in idx], self.pad, self.lm.device)
            out.append(Batch(idx, ids, mask, (mask.cumsum(-1) - 1).clamp(min=0)))
        return out

    @torch.inference_mode()
    def _logits(self, b: Batch, cols: int = 1) -> torch.Tensor:
        t = b.ids.shape[1]
        keep = torch.arange(t - cols, t, device=b.ids.device)
        out = self.lm.model(input_ids=b.ids, attention_mask=b.mask, position_ids=b.pos, logits_to_keep=keep,
                            use_cache=False)
        return out.logits

    # -- scores ------------------------------------------------------------------------------
    def last_logits(self, texts: Sequence[str]) -> torch.Tensor:
        """Next-token logits ``[N, V]`` (float32, input order) after each formatted text."""
        seqs = [self.lm.chat.encode(t) for t in texts]
        res: list[torch.Tensor | None] = [None] * len(seqs)
        for b in self.batches(seqs):
            lg = self._logits(b, 1)[:, -1].float().cpu()
            for r, i in enumerate(b.idx):
                res[i] = lg[r]
        return torch.stack(res)  # type: ignore[arg-type]

    def first_token(self, texts: Sequence[str], logits: torch.Tensor | None = None) -> torch.Tensor:
        """First-token refusal log-odds per text ``[N]``."""
        lg = self.last_logits(texts) if logits is None else logits
        return first_token_log_odds(lg, self.refusal_ids)

    def continuation_logprob(self, texts: Sequence[str], conts: Sequence[Sequence[int]],
                             prefixes: Sequence[Sequence[int]] | None = None) -> torch.Tensor:
        """``Σ_k log p(c_k | text, prefix, c_<k)`` per row (teacher forced, one forward per batch)."""
        prefixes = prefixes or [[] for _ in texts]
        seqs = [self.lm.chat.encode(t) + list(p) + list(c) for t, p, c in zip(texts, prefixes, conts)]
        res = torch.zeros(len(seqs))
        for b in self.batches(seqs):
            m = max(len(conts[i]) for i in b.idx)
            lg = self._logits(b, m + 1)[:, :-1].float()  # predictions for the last m columns
            lp = torch.log_softmax(lg, -1)
            for r, i in enumerate(b.idx):
                c = list(conts[i])
                if not c:
                    res[i] = float("nan")
                    continue
                tgt = torch.tensor(c, device=lp.device)
                rows = lp[r, m - len(c):]
                res[i] = float(rows.gather(-1, tgt[:, None]).sum())
        return res

    # -- several plans per forward pass (per-row steering) --------------------------------------
    @torch.inference_mode()
    def forward_many(self, b: Batch, plans: Sequence, cols: int = 1, *, start: int = 0,
                     resid: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Logits ``[B, cols, V]`` (float32) of batch ``b`` under each plan: the batch is stacked once per
        plan and every block of rows gets its own plan (``steering`` with a list). ``start > 0`` runs only
        blocks ``start..`` on ``resid`` ``[B, T, d]``, the unsteered residual at block ``start``'s input
        (exact when every plan acts at blocks ``>= start``; see :func:`from_block`)."""
        from r1probe.steering.runtime import steering

        k, n = len(plans), len(b.idx)
        t = b.ids.shape[1]
        keep = torch.arange(t - cols, t, device=b.ids.device)
        kw = dict(attention_mask=b.mask.repeat(k, 1), position_ids=b.pos.repeat(k, 1), logits_to_keep=keep,
                  use_cache=False)
        with steering(self.lm, list(plans) if k > 1 else plans[0]):
            if start:
                with from_block(self.lm, start):
                    out = self.lm.model(inputs_embeds=resid.repeat(k, 1, 1), **kw)
            else:
                out = self.lm.model(input_ids=b.ids.repeat(k, 1), **kw)
        return [x.float() for x in out.logits.split(n)]

    @torch.inference_mode()
    def residuals(self, b: Batch, layers: Sequence[int], logits: bool = False):
        """Unsteered residual stream ``[B, T, d]`` at the input of each block in ``layers`` (one forward
        that stops after the last of them; hooks from ``r1probe.steering.runtime.recording``). With
        ``logits`` the forward runs to the end and ``(residuals, last logits [B, V] float32)`` is returned."""
        from contextlib import ExitStack

        from r1probe.steering.runtime import StopForward, recording

        blocks = self.lm.layout.layers(self.lm.model)
        wanted = sorted(set(layers))
        out = None
        with ExitStack() as stack:
            seen = {li: stack.enter_context(recording(blocks[li], stop=li == wanted[-1] and not logits))
                    for li in wanted}
            try:
                out = self.lm.model(input_ids=b.ids, attention_mask=b.mask, position_ids=b.pos, use_cache=False,
                                    logits_to_keep=1)
            except StopForward:
                pass
        res = {li: v[0] for li, v in seen.items()}
        return (res, out.logits[:, -1].float()) if logits else res

    @torch.inference_mode()
    def generate(self, texts: Sequence[str], max_new_tokens: int = 24, plans: Sequence | None = None):
        """Greedy continuations (KV cache, early stop on EOS), decoded, input order.

        With ``plans`` the result is one list of continuations per plan: every prompt under every plan,
        in one call of the generation engine with per-row plans (:func:`r1probe.models.engine.generate`:
        rows in flight, prompts prefilled in groups of similar length, the shared prefix once per plan)."""
        if plans is not None:
            return self.generate_blocks([(texts, p) for p in plans], max_new_tokens)
        eos, eos_t = self._eos()
        seqs = [self.lm.chat.encode(t) for t in texts]
        out: list[str] = [""] * len(seqs)
        for b in self.batches(seqs, max_new_tokens):
            for r, txt in zip(b.idx, self._generate_batch(b, max_new_tokens, eos, eos_t)):
                out[r] = txt
        return out

    @torch.inference_mode()
    def generate_blocks(self, blocks: Sequence[tuple[Sequence[str], object]], max_new_tokens: int = 24) -> list[list[str]]:
        """Greedy continuations of several ``(texts, plan)`` blocks, each block under its own plan, in
        one call of the generation engine with per-row plans: e.g. harmless prompts under an induce
        plan beside harmful ones under a bypass plan, for about the cost of one generation (decoding
        reads the weights once a step, whatever the rows). One list of continuations per block, in
        input order."""
        import r1probe.steering  # noqa: F401 - registers how the engine applies plans
        from r1probe.models.engine import SamplingParams, generate

        texts = [t for ts, _ in blocks for t in ts]
        if not texts:
            return [[] for _ in blocks]
        which = [j for j, (ts, _) in enumerate(blocks) for _ in ts]
        done = generate(self.lm, texts, SamplingParams(max_new_tokens=max_new_tokens),
                        plan=[p for _, p in blocks], row_plans=which)
        out: list[list[str]] = []
        k = 0
        for ts, _ in blocks:
            out.append([c[0].text for c in done[k:k + len(ts)]])
            k += len(ts)
        return out

    def _eos(self):
        tok = self.lm.tokenizer
        cfg_eos = getattr(getattr(self.lm.model, "generation_config", None), "eos_token_id", None)
        eos = {tok.eos_token_id} | set(cfg_eos if isinstance(cfg_eos, (list, tuple)) else [cfg_eos])
        eos.discard(None)
        return eos, (torch.tensor(sorted(eos), device=self.lm.device) if eos else None)

    def _generate_batch(self, b: Batch, max_new_tokens: int, eos: set, eos_t) -> list[str]:
        from transformers import DynamicCache

        tok = self.lm.tokenizer
        cache = DynamicCache()
        t = b.ids.shape[1]
        o = self.lm.model(input_ids=b.ids, attention_mask=b.mask, position_ids=b.pos, cache=cache,
                          use_cache=True, logits_to_keep=torch.arange(t - 1, t, device=b.ids.device))
        mask, pos = b.mask, b.pos[:, -1:]
        done = torch.zeros(len(b.idx), dtype=torch.bool, device=b.ids.device)
        gen = []
        for _ in range(max_new_tokens):
            nxt = o.logits[:, -1].argmax(-1)
            nxt = torch.where(done, torch.full_like(nxt, self.pad), nxt)
            gen.append(nxt)
            if eos_t is not None:
                done = done | torch.isin(nxt, eos_t)
            if bool(done.all()):
                break
            mask = torch.cat([mask, (~done).long()[:, None]], 1)
            pos = pos + 1
            o = self.lm.model(input_ids=nxt[:, None], attention_mask=mask, position_ids=pos,
                              cache=cache, use_cache=True, logits_to_keep=1)
        g = torch.stack(gen, 1).cpu()
        res = []
        for r in range(g.shape[0]):
            row = [int(x) for x in g[r] if int(x) not in eos and int(x) != self.pad]
            res.append(tok.decode(row, skip_special_tokens=True))
        return res


@contextmanager
def from_block(lm, start: int):
    """Inside the block, the model's forward runs only decoder blocks ``start..`` (pass the residual at
    block ``start``'s input as ``inputs_embeds``). Exact for models whose forward feeds
    ``inputs_embeds`` unchanged to the first block and whose blocks share one attention type
    (:func:`from_block_ok` checks a model once)."""
    layout = lm.layout
    parent_path, _, name = layout.layers_path.rpartition(".")
    parent = layout._get(lm.model, parent_path) if parent_path else lm.model
    full = getattr(parent, name)
    setattr(parent, name, torch.nn.ModuleList(list(full)[start:]))
    try:
        yield
    finally:
        setattr(parent, name, full)


@torch.inference_mode()
def from_block_ok(scorer: "Scorer", b: Batch, start: int, atol: float = 1e-3, *,
                  full: torch.Tensor | None = None, resid: torch.Tensor | None = None) -> bool:
    """True when a forward from block ``start`` on the recorded residual gives the full forward's
    last logits (so the unsteered prefix of a plan can be computed once). ``full`` ``[B, V]`` (the
    batch's last logits) and ``resid`` (its residual at block ``start``'s input), when already
    computed, are used instead of recomputing them."""
    cfg = getattr(scorer.lm.model, "config", None)
    types = getattr(cfg, "layer_types", None)
    if types and len(set(types)) > 1:
        return False
    try:
        full = scorer._logits(b, 1).float() if full is None else full.reshape(len(b.idx), 1, -1).float().to(b.ids.device)
        resid = scorer.residuals(b, [start])[start] if resid is None else resid
        with from_block(scorer.lm, start):
            t = b.ids.shape[1]
            part = scorer.lm.model(inputs_embeds=resid, attention_mask=b.mask, position_ids=b.pos, use_cache=False,
                                   logits_to_keep=torch.arange(t - 1, t, device=b.ids.device)).logits.float()
    except Exception:  # noqa: BLE001 - any failure means: run the full forward
        return False
    scale = float(full.abs().max()) or 1.0
    return bool(torch.isfinite(part).all()) and float((part - full).abs().max()) <= atol * max(scale, 1.0)


def judge(texts: Sequence[str], *, prompt_opened_think: bool = False) -> torch.Tensor:
    """``1.0`` per reply that refuses under the refusal rule (:func:`r1probe.eval.judges.refusal.refusal_flags`,
    keyword judge, answer after any ``</think>``; an unterminated reply is ``0.0``), else ``0.0``."""
    from r1probe.eval.judges.refusal import refusal_flags

    return torch.tensor([float(f) for f in refusal_flags(texts, prompt_opened_think=prompt_opened_think)])


@dataclass
class Lookahead:
    """Teacher-forcing targets for the lookahead score: per refused prompt, (text, prefix, phrase)."""

    texts: list[str]
    prefixes: list[list[int]]
    phrases: list[list[int]]
    source: list[int]  # index into the prompt list


def lookahead_targets(scorer: Scorer, texts: Sequence[str], replies: Sequence[str],
                      max_phrase_tokens: int = 6) -> Lookahead:
    """Cut each refused reply at its refusal phrase (keyword judge); keep prefix and phrase tokens."""
    from r1probe.eval.judges.keyword import refusal_match

    enc = scorer.lm.chat.encode
    out = Lookahead([], [], [], [])
    for i, (t, r) in enumerate(zip(texts, replies)):
        m = refusal_match(r)
        if not m or m not in r:
            continue
        k = r.index(m)
        prefix = enc(r[:k]) if k else []
        phrase = enc(r[: k + len(m)])[len(prefix):][:max_phrase_tokens] if k else enc(m)[:max_phrase_tokens]
        if not phrase:
            continue
        out.texts.append(t)
        out.prefixes.append(prefix)
        out.phrases.append(phrase)
        out.source.append(i)
    return out


def lookahead_log_odds(scorer: Scorer, la: Lookahead) -> torch.Tensor:
    """Log-odds of each refusal phrase after its restatement prefix (``[len(la.texts)]``)."""
    if not la.texts:
        return torch.zeros(0)
    return log_odds(scorer.continuation_logprob(la.texts, la.phrases, la.prefixes))


def nanmean(x: torch.Tensor) -> float:
    x = x[torch.isfinite(x)]
    return float(x.mean()) if x.numel() else math.nan
