"""Supervised fine-tuning of a student chat model on R1 reasoning traces (loss on the reply only).

Each trace is rendered with the student's own chat template as [user: prompt, assistant: R1 reply]. The
prompt part is the template's generation prompt (``add_generation_prompt=True``); everything after it
(the ``<think>`` block, the answer and the template's end-of-turn tokens) is the reply, and only reply
tokens carry loss. Templates that drop the reasoning from assistant turns (the R1 template keeps only what
follows ``</think>``) are handled by appending the reply to the generation prompt text directly.

The loss of one optimizer step is the mean token cross-entropy over all reply tokens of its
``batch_size x grad_accum`` examples::

    L = - (1 / sum_i |R_i|) * sum_i sum_{t in R_i} log p(x_t | x_<t)

Training is full fine-tuning (bf16 weights, fp32 master copies and fp32 AdamW state; optionally only some
layers) or LoRA (peft; adapters in fp32, merged into the bf16 weights at export). The run is deterministic
given ``seed``: the data order of epoch e is ``randperm(n, seed + e)`` and the examples of step s are items
``[s*B*A, (s+1)*B*A)`` of the concatenated epochs, so a resumed run sees exactly the examples it would have.

Checkpoints (``<work>/checkpoints/step-NNNNNN/``): ``trainable.safetensors`` (fp32 master weights of the
trained parameters), ``optimizer.safetensors`` (AdamW moments), ``rng.safetensors`` (torch RNG) and
``state.json`` (step, hashes); each is written to a temporary folder and renamed, so a run killed at any
moment (kill -9) resumes from its last complete checkpoint. No pickle anywhere.
"""

from __future__ import annotations

import json
import math
import os
import re
import resource
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch

from r1probe.distill.traces import Trace, traces_sha256
from r1probe.errors import R1ProbeError
from r1probe.provenance import atomic_write_json, atomic_write_text, sha256_json

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
IGNORE = -100


@dataclass
class SFTConfig:
    """Settings of one fine-tuning run (validated on construction).

    ``max_steps`` (optimizer steps) wins over ``epochs`` when set. ``lora=False`` is full fine-tuning of the
    decoder layers in ``train_layers`` (all when None) plus the final norm (and the embeddings when
    ``train_embeddings``). ``lr`` schedule: linear warm-up over ``warmup_steps``, then cosine decay to
    ``min_lr_ratio * lr``. ``time_limit_s`` stops a run early at a step boundary (it saves a checkpoint and
    exports, marked unfinished; calling ``train`` again resumes it).
    """

    lr: float = 2e-4
    epochs: float = 1.0
    max_steps: int | None = None
    batch_size: int = 1
    grad_accum: int = 8
    max_len: int = 512
    seed: int = 0
    lora: bool = True
    lora_rank: int = 16
    lora_alpha: float = 32.0
    lora_dropout: float = 0.0
    lora_targets: tuple[str, ...] = LORA_TARGETS
    train_layers: tuple[int, ...] | None = None
    train_embeddings: bool = False
    weight_decay: float = 0.0
    warmup_steps: int = 5
    min_lr_ratio: float = 0.1
    max_grad_norm: float = 1.0
    save_every: int = 25
    keep_checkpoints: int = 2
    time_limit_s: float | None = None

    def __post_init__(self):
        def bad(msg):
            raise R1ProbeError(f"SFTConfig: {msg}")

        if not (isinstance(self.lr, (int, float)) and 0 < self.lr < 1):
            bad(f"lr={self.lr!r} must be in (0, 1)")
        if self.max_steps is not None and (not isinstance(self.max_steps, int) or self.max_steps < 1):
            bad(f"max_steps={self.max_steps!r} must be a positive integer or None")
        if self.max_steps is None and not (isinstance(self.epochs, (int, float)) and self.epochs > 0):
            bad(f"epochs={self.epochs!r} must be > 0")
        for name in ("batch_size", "grad_accum", "save_every", "keep_checkpoints", "lora_rank"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                bad(f"{name}={v!r} must be a positive integer")
        if not isinstance(self.max_len, int) or self.max_len < 16:
            bad(f"max_len={self.max_len!r} must be an integer >= 16")
        if self.warmup_steps < 0 or not 0 <= self.min_lr_ratio <= 1:
            bad("warmup_steps must be >= 0 and min_lr_ratio in [0, 1]")
        if not 0 <= self.lora_dropout < 1 or self.lora_alpha <= 0:
            bad("lora_dropout must be in [0, 1) and lora_alpha > 0")
        if self.weight_decay < 0 or self.max_grad_norm <= 0:
            bad("weight_decay must be >= 0 and max_grad_norm > 0")
        if self.time_limit_s is not None and self.time_limit_s <= 0:
            bad("time_limit_s must be > 0")
        self.lora_targets = tuple(self.lora_targets)
        if self.lora and not self.lora_targets:
            bad("lora_targets is empty")
        if self.train_layers is not None:
            self.train_layers = tuple(int(i) for i in self.train_layers)
            if not self.train_layers:
                bad("train_layers is empty (use None for all layers)")

    def to_dict(self) -> dict:
        return asdict(self)

    def training_hash(self) -> str:
        """Hash of the fields that decide the trained weights (not save/stop settings): resume checks it."""
        d = self.to_dict()
        for k in ("save_every", "keep_checkpoints", "time_limit_s"):
            d.pop(k)
        return sha256_json(d)


# ---------------------------------------------------------------- encoding

@dataclass
class Encoded:
    """Token ids of one rendered trace; ``start`` is the index of the first reply (loss-bearing) token."""

    ids: list[int]
    start: int
    truncated: bool = False

    @property
    def labels(self) -> list[int]:
        return [IGNORE] * self.start + self.ids[self.start:]

    @property
    def n_reply(self) -> int:
        return len(self.ids) - self.start


def encode_trace(chat, trace: Trace, max_len: int | None = None) -> Encoded | None:
    """Render ``trace`` with ``chat`` (a ``ChatFormatter``) and find the prompt/reply token boundary.

    The prompt is ``chat.render([user], add_generation_prompt=True)``; the full text is the rendered
    conversation when it starts with the prompt text and contains the reasoning, else prompt + the part of
    the reply the prompt does not already open (e.g. the R1 prompt ends with ``<think>\\n``) + EOS. The
    reply tokens are those after the prompt's tokens when the full text's tokens start with them; otherwise
    prompt and reply are tokenized separately and concatenated (the prompt tokens then equal exactly what
    the model sees at inference). Sequences longer than ``max_len`` are cut on the right; ``None`` when the
    prompt leaves no room for a reply token.
    """
    user = [{"role": "user", "content": trace.prompt}]
    reply = trace.reply()
    prompt_text = chat.render(user, add_generation_prompt=True)
    full_text = chat.render(user + [{"role": "assistant", "content": reply}], add_generation_prompt=False)
    if not (full_text.startswith(prompt_text) and trace.reasoning.strip() in full_text):
        tail = reply
        opened = _opened_suffix(prompt_text, reply)
        if opened:
            tail = reply[len(opened):]
        eos = getattr(chat.tokenizer, "eos_token", None) or ""
        full_text = prompt_text + tail + eos
    p_ids = chat.encode(prompt_text)
    f_ids = chat.encode(full_text)
    if f_ids[:len(p_ids)] != p_ids:
        f_ids = p_ids + chat.encode(full_text[len(prompt_text):])
    enc = Encoded(f_ids, len(p_ids))
    if max_len is not None and len(enc.ids) > max_len:
        enc = Encoded(enc.ids[:max_len], enc.start, truncated=True)
    return enc if enc.n_reply > 0 else None


def _opened_suffix(prompt_text: str, reply: str) -> str:
    """The longest start of ``reply`` that ``prompt_text`` already ends with (e.g. ``<think>\\n``)."""
    for k in range(min(len(reply), 64), 0, -1):
        if prompt_text.endswith(reply[:k]):
            return reply[:k]
    return ""


# ---------------------------------------------------------------- schedule and data order

def lr_at(step: int, cfg: SFTConfig, total_steps: int) -> float:
    """Learning rate of optimizer step ``step`` (0-based): linear warm-up, then cosine to min_lr_ratio*lr."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    span = max(1, total_steps - cfg.warmup_steps)
    frac = min(1.0, (step - cfg.warmup_steps) / span)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * frac)))


def total_steps_for(cfg: SFTConfig, n_examples: int) -> int:
    if cfg.max_steps is not None:
        return cfg.max_steps
    return max(1, math.ceil(cfg.epochs * n_examples / (cfg.batch_size * cfg.grad_accum)))


class DataOrder:
    """Example index of stream position k: epoch ``k // n`` shuffled by ``randperm(n, seed + epoch)``."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self._perms = n, seed, {}

    def __getitem__(self, k: int) -> int:
        e = k // self.n
        if e not in self._perms:
            g = torch.Generator().manual_seed(self.seed + e)
            self._perms[e] = torch.randperm(self.n, generator=g).tolist()
        return self._perms[e][k % self.n]


def collate(examples: Sequence[Encoded], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-pad to ``(input_ids, attention_mask, labels)``; padding carries label -100."""
    n = max(len(e.ids) for e in examples)
    ids = torch.full((len(examples), n), pad_id, dtype=torch.long)
    mask = torch.zeros((len(examples), n), dtype=torch.long)
    labels = torch.full((len(examples), n), IGNORE, dtype=torch.long)
    for r, e in enumerate(examples):
        ids[r, :len(e.ids)] = torch.tensor(e.ids)
        mask[r, :len(e.ids)] = 1
        labels[r, :len(e.ids)] = torch.tensor(e.labels)
    return ids, mask, labels


def reply_loss_sum(model, ids: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Sum of token cross-entropies over the reply tokens (logits computed only where a label follows)."""
    keep = torch.zeros_like(labels, dtype=torch.bool)
    keep[:, :-1] = labels[:, 1:] != IGNORE
    targets = labels[:, 1:][keep[:, :-1]]
    logits = model(input_ids=ids, attention_mask=mask, logits_to_keep=keep, use_cache=False).logits
    logits = logits.reshape(-1, logits.shape[-1])
    if logits.shape[0] != targets.shape[0]:  # a model that ignores a boolean logits_to_keep
        logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits[keep]
    return torch.nn.functional.cross_entropy(logits.float(), targets.to(logits.device), reduction="sum")


# ---------------------------------------------------------------- trainable parameters

def prepare_model(lm, cfg: SFTConfig):
    """Make the trainable parameters: wrap with LoRA (peft) or unfreeze the chosen layers. Returns the model to call.
    The linear layers go back to the plain kernel (``r1probe.models.kernels.unpack_linears``): an adapter merge
    writes weights where a packed copy would not see it."""
    from r1probe.models.kernels import unpack_linears

    model = lm.model
    unpack_linears(model)
    model.requires_grad_(False)
    n_layers = lm.layout.n_layers
    layers = None
    if cfg.train_layers is not None:
        layers = sorted({i % n_layers for i in cfg.train_layers})
        if any(not -n_layers <= i < n_layers for i in cfg.train_layers):
            raise R1ProbeError(f"train_layers {cfg.train_layers} outside 0..{n_layers - 1}")
    if cfg.lora:
        try:
            from peft import LoraConfig, get_peft_model
        except ImportError as e:
            raise R1ProbeError("LoRA needs peft: pip install 'r1probe[train]' (or pass --full)") from e
        names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
        targets = [t for t in cfg.lora_targets if t in names]
        if not targets:
            raise R1ProbeError(f"none of the LoRA targets {cfg.lora_targets} are modules of this model")
        pcfg = LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                          target_modules=targets, layers_to_transform=layers, bias="none", task_type="CAUSAL_LM")
        model = get_peft_model(model, pcfg)
    else:
        for i in (layers if layers is not None else range(n_layers)):
            lm.layout.layer(model, i).requires_grad_(True)
        lm.layout.norm(model).requires_grad_(True)
        if cfg.train_embeddings:
            lm.layout.embed(model).requires_grad_(True)
            lm.layout.lm_head(model).requires_grad_(True)
    model.train()
    return model


def trainable(model) -> list[tuple[str, torch.nn.Parameter]]:
    seen, out = set(), []
    for n, p in model.named_parameters():
        if p.requires_grad and id(p) not in seen:
            seen.add(id(p))
            out.append((n, p))
    return out


# ---------------------------------------------------------------- checkpoints

_STEP_DIR = re.compile(r"^step-(\d+)$")


def latest_checkpoint(work: Path) -> Path | None:
    root = work / "checkpoints"
    if not root.is_dir():
        return None
    found = [(int(m.group(1)), d) for d in root.iterdir()
             if (m := _STEP_DIR.match(d.name)) and (d / "state.json").exists()]
    return max(found)[1] if found else None


def save_checkpoint(work: Path, step: int, names: list[str], masters: list[torch.Tensor], opt, state: dict,
                    keep: int) -> Path:
    """Write checkpoint ``step`` atomically (temp folder + rename) and prune all but the newest ``keep``."""
    from safetensors.torch import save_file

    root = work / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:06d}"
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".step-{step:06d}.partial-"))
    try:
        save_file({n: m.detach().float().contiguous() for n, m in zip(names, masters)}, str(tmp / "trainable.safetensors"))
        osd = opt.state_dict()
        tensors, scalars = {}, {}
        for i, st in osd["state"].items():
            for k, v in st.items():
                if torch.is_tensor(v):
                    tensors[f"{i}.{k}"] = v.detach().contiguous()
                else:
                    scalars[f"{i}.{k}"] = v
        save_file(tensors, str(tmp / "optimizer.safetensors"))
        save_file({"torch": torch.get_rng_state()}, str(tmp / "rng.safetensors"))
        (tmp / "state.json").write_text(json.dumps({**state, "step": step, "optimizer_scalars": scalars},
                                                   indent=2, default=str) + "\n", encoding="utf-8")
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    olds = sorted((int(m.group(1)), d) for d in root.iterdir() if (m := _STEP_DIR.match(d.name)))
    for _, d in olds[:-keep]:
        shutil.rmtree(d, ignore_errors=True)
    for d in root.glob(".step-*.partial-*"):  # leftovers of a killed save
        shutil.rmtree(d, ignore_errors=True)
    return final


def load_checkpoint(ckpt: Path, names: list[str], masters: list[torch.Tensor], opt) -> dict:
    """Restore master weights, optimizer moments and RNG from ``ckpt``; returns its state.json."""
    from safetensors.torch import load_file

    state = json.loads((ckpt / "state.json").read_text("utf-8"))
    weights = load_file(str(ckpt / "trainable.safetensors"))
    if set(weights) != set(names):
        raise R1ProbeError(f"{ckpt}: its trained parameters do not match this model/config")
    with torch.no_grad():
        for n, m in zip(names, masters):
            m.copy_(weights[n].to(m.dtype))
    tensors = load_file(str(ckpt / "optimizer.safetensors"))
    per: dict[int, dict] = {}
    for key, v in tensors.items():
        i, k = key.split(".", 1)
        per.setdefault(int(i), {})[k] = v
    for key, v in state.get("optimizer_scalars", {}).items():
        i, k = key.split(".", 1)
        per.setdefault(int(i), {})[k] = v
    osd = opt.state_dict()
    osd["state"] = per
    opt.load_state_dict(osd)
    torch.set_rng_state(load_file(str(ckpt / "rng.safetensors"))["torch"])
    return state


# ---------------------------------------------------------------- memory

def peak_rss_mb() -> float:
    """Peak resident memory of this process in MiB (``ru_maxrss`` is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_mb() -> float:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


# ---------------------------------------------------------------- the loop

@dataclass
class TrainResult:
    export: Path
    steps: int
    total_steps: int
    finished: bool
    stats: dict = field(default_factory=dict)


def default_work_dir(out: str | os.PathLike) -> Path:
    out = Path(out)
    return out.with_name(out.name + ".work")


def train(student, traces: Sequence[Trace], cfg: SFTConfig, out: str | os.PathLike, *,
          work_dir: str | os.PathLike | None = None, progress: bool = True, overwrite: bool = False,
          on_step: Callable[[int, dict], None] | None = None, traces_source: str | None = None,
          load_kw: dict | None = None) -> Path:
    """Fine-tune ``student`` on ``traces`` and export it to ``out``; returns the export folder.

    ``student``: a model spec (loaded in bfloat16 on CPU/GPU, ``load_kw`` passed to ``load_model``) or a
    ``LoadedModel`` (trained in place: its weights become the distilled ones). ``work_dir`` (default
    ``<out>.work``) holds ``checkpoints/``, ``loss.jsonl`` and ``encode.json``; a run finds its last
    checkpoint there and resumes (refused when the config or traces differ). A finished export of the same
    student, traces and config is returned without training (rerunning skips finished work).
    ``on_step(step, record)`` is called after every optimizer step (record = the loss-log row).
    """
    return train_full(student, traces, cfg, out, work_dir=work_dir, progress=progress, overwrite=overwrite,
                      on_step=on_step, traces_source=traces_source, load_kw=load_kw).export


def _student_spec(student) -> str:
    return student if isinstance(student, str) else student.spec.raw


def train_full(student, traces: Sequence[Trace], cfg: SFTConfig, out: str | os.PathLike, *,
               work_dir=None, progress: bool = True, overwrite: bool = False, on_step=None,
               traces_source: str | None = None, load_kw: dict | None = None) -> TrainResult:
    """:func:`train` returning a :class:`TrainResult` (steps done, finished flag, throughput and memory stats)."""
    from tqdm.auto import tqdm

    from r1probe.distill.export import export_student, finished_export

    if not traces:
        raise R1ProbeError("no traces to train on")
    out = Path(out)
    work = Path(work_dir) if work_dir else default_work_dir(out)
    tsha = traces_sha256(traces)
    spec = _student_spec(student)
    run_key = {"student": spec, "traces_sha256": tsha, "config_sha256": cfg.training_hash()}
    done = finished_export(out, run_key)
    if done is not None:
        return TrainResult(out, done.get("steps", 0), done.get("total_steps", 0), True, done.get("train_stats", {}))
    if out.exists() and not overwrite and not _own_unfinished(out, run_key):
        raise R1ProbeError(f"{out} already exists and is not this run's export (pass overwrite=True / --overwrite)")

    if isinstance(student, str):
        from r1probe.models import load_model

        lm = load_model(student, **(load_kw or {}))
    else:
        lm = student
    torch.manual_seed(cfg.seed)
    t_load = time.time()

    # encode once; cached stats only (the ids are recomputed: cheap, and no pickle)
    encoded, n_trunc, n_skip = [], 0, 0
    for t in traces:
        e = encode_trace(lm.chat, t, cfg.max_len)
        if e is None:
            n_skip += 1
            continue
        n_trunc += e.truncated
        encoded.append(e)
    if not encoded:
        raise R1ProbeError(f"every trace's prompt is longer than max_len={cfg.max_len}")
    enc_stats = {"traces": len(traces), "used": len(encoded), "truncated": n_trunc, "skipped": n_skip,
                 "mean_tokens": sum(len(e.ids) for e in encoded) / len(encoded),
                 "mean_reply_tokens": sum(e.n_reply for e in encoded) / len(encoded)}
    work.mkdir(parents=True, exist_ok=True)
    atomic_write_json(work / "encode.json", enc_stats)

    model = prepare_model(lm, cfg)
    params = trainable(model)
    names = [n for n, _ in params]
    masters = [p if p.dtype == torch.float32 else p.detach().float().clone().requires_grad_(True) for _, p in params]
    opt = torch.optim.AdamW(masters, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.999), eps=1e-8)
    total = total_steps_for(cfg, len(encoded))
    per_step = cfg.batch_size * cfg.grad_accum
    order = DataOrder(len(encoded), cfg.seed)
    pad = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else lm.tokenizer.eos_token_id

    state_key = {**run_key, "n_examples": len(encoded), "total_steps": total}
    log_path = work / "loss.jsonl"
    step, prev_elapsed = 0, 0.0
    ckpt = latest_checkpoint(work)
    if ckpt is not None:
        st = json.loads((ckpt / "state.json").read_text("utf-8"))
        mism = [k for k in ("student", "traces_sha256", "config_sha256") if st.get(k) != run_key[k]]
        if mism:
            raise R1ProbeError(f"{work} holds checkpoints of a different run ({', '.join(mism)} differ); "
                               f"use another work dir or delete it")
        st = load_checkpoint(ckpt, names, masters, opt)
        step, prev_elapsed = int(st["step"]), float(st.get("elapsed_s", 0.0))
        _sync_params(params, masters)
        total = max(total, step)
    rows = _read_log(log_path)
    rows = [r for r in rows if r["step"] <= step]
    atomic_write_text(log_path, "".join(json.dumps(r) + "\n" for r in rows))

    n_trainable = sum(m.numel() for m in masters)
    stats = {"resumed_from_step": step, "trainable_params": n_trainable, "encode": enc_stats,
             "load_s": round(time.time() - t_load, 1)}
    started, cpu_started, tok_run, reply_run = time.time(), time.process_time(), 0, 0
    bar = tqdm(total=total, initial=step, desc="distill", unit="step", disable=not progress)
    stopped_early = False
    with open(log_path, "a", encoding="utf-8") as log:
        while step < total:
            if cfg.time_limit_s is not None and time.time() - started > cfg.time_limit_s:
                stopped_early = True
                break
            t0, c0 = time.time(), time.process_time()
            batch = [encoded[order[k]] for k in range(step * per_step, (step + 1) * per_step)]
            n_reply = sum(e.n_reply for e in batch)
            loss_sum = 0.0
            for j in range(0, len(batch), cfg.batch_size):
                ids, mask, labels = collate(batch[j:j + cfg.batch_size], pad)
                dev = lm.device
                ls = reply_loss_sum(model, ids.to(dev), mask.to(dev), labels.to(dev))
                (ls / n_reply).backward()
                loss_sum += float(ls.detach())
                _accumulate(params, masters)
            lr = lr_at(step, cfg, total)
            for g in opt.param_groups:
                g["lr"] = lr
            gnorm = float(torch.nn.utils.clip_grad_norm_(masters, cfg.max_grad_norm))
            opt.step()
            opt.zero_grad(set_to_none=True)
            _sync_params(params, masters)
            step += 1
            dt, cpu = time.time() - t0, time.process_time() - c0
            n_tok = sum(len(e.ids) for e in batch)
            tok_run += n_tok
            reply_run += n_reply
            rec = {"step": step, "loss": loss_sum / n_reply, "lr": lr, "grad_norm": gnorm, "tokens": n_tok,
                   "reply_tokens": n_reply, "step_s": round(dt, 3), "tok_s": round(n_tok / dt, 1),
                   "cpu_s": round(cpu, 2),
                   "rss_mb": round(rss_mb(), 1), "peak_rss_mb": round(peak_rss_mb(), 1)}
            log.write(json.dumps(rec) + "\n")
            log.flush()
            bar.update(1)
            bar.set_postfix(loss=f"{rec['loss']:.3f}", tok_s=f"{rec['tok_s']:.0f}")
            if step % cfg.save_every == 0 or step == total:
                save_checkpoint(work, step, names, masters, opt,
                                {**state_key, "elapsed_s": prev_elapsed + time.time() - started}, cfg.keep_checkpoints)
            if on_step is not None:
                on_step(step, rec)
    bar.close()
    if stopped_early:
        save_checkpoint(work, step, names, masters, opt,
                        {**state_key, "elapsed_s": prev_elapsed + time.time() - started}, cfg.keep_checkpoints)
    wall, cpu_total = time.time() - started, time.process_time() - cpu_started
    rows = _read_log(log_path)
    stats.update({"steps": step, "total_steps": total, "finished": step >= total,
                  "train_wall_s_this_call": round(wall, 1),
                  "tokens_per_s_this_call": round(tok_run / wall, 1) if wall > 0 and tok_run else None,
                  "reply_tokens_per_s_this_call": round(reply_run / wall, 1) if wall > 0 and reply_run else None,
                  "cpu_s_this_call": round(cpu_total, 1), "threads": torch.get_num_threads(),
                  "peak_rss_mb": round(peak_rss_mb(), 1), "loss_summary": loss_summary(rows)})

    # merge / freeze, then export
    if cfg.lora:
        model = model.merge_and_unload()
        lm.model = model
    lm.model.eval()
    lm.model.requires_grad_(False)
    del opt, masters
    export_student(lm, out, cfg=cfg, run_key=run_key, traces_source=traces_source, stats=stats,
                   loss_rows=rows, overwrite=True)
    return TrainResult(out, step, total, step >= total, stats)


def _accumulate(params, masters) -> None:
    """Move bf16 gradients into the fp32 master gradients (fp32 parameters already accumulate in place)."""
    for (_, p), m in zip(params, masters):
        if m is p or p.grad is None:
            continue
        g = p.grad.float()
        m.grad = g if m.grad is None else m.grad.add_(g)
        p.grad = None


@torch.no_grad()
def _sync_params(params, masters) -> None:
    for (_, p), m in zip(params, masters):
        if m is not p:
            p.copy_(m.to(p.dtype))


def _read_log(path: Path) -> list[dict]:
    if not path.exists():
        return []
    rows = []
    for line in path.read_text("utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut by a kill
            continue
    return rows


def loss_summary(rows: Sequence[dict], window: int = 10) -> dict:
    """First/last losses (means over ``window`` steps), min, and the mean of each tenth of the run."""
    if not rows:
        return {}
    losses = [r["loss"] for r in rows]
    w = max(1, min(window, len(losses) // 2 or 1))
    k = max(1, len(losses) // 10)
    return {"steps": len(losses), "first": round(sum(losses[:w]) / w, 4), "last": round(sum(losses[-w:]) / w, 4),
            "min": round(min(losses), 4), "window": w,
            "deciles": [round(sum(losses[i:i + k]) / len(losses[i:i + k]), 4) for i in range(0, len(losses), k)][:10]}


def _own_unfinished(out: Path, run_key: dict) -> bool:
    try:
        m = json.loads((out / "r1probe_manifest.json").read_text("utf-8"))
    except (OSError, json.JSONDecodeError):
        return False
    return all(m.get(k) == v for k, v in run_key.items())
