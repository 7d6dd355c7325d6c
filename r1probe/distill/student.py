"""The R1-style student: a reasoning model in miniature, built offline from the embedded model by a recipe.

A :class:`StudentRecipe` names everything that decides the student's weights: the base model, the traces
(GSM8K train problems in R1 format and BELLE everyday Chinese instructions with reference answers, mixed and
shuffled with the seed; no safety data, like the DeepSeek-R1 distillation mix of reasoning and general data)
and the fine-tuning settings. :func:`build_student` trains it once (``r1probe.distill.sft``: checkpoints that
resume, an atomic export) into ``<cache>/students/<name>-<recipe hash>/`` and returns the folder; a finished
build is reused. Same recipe, same machine kind and thread count -> same weights (``weights_sha256``).

``builtin:r1-student`` is this recipe with its defaults: the spec builds the student on first use (it says so
on stderr, with progress) and loads the cached folder afterwards (entry point ``r1probe.built_models``).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from r1probe.distill.traces import Trace, belle_r1_traces, gsm8k_r1_traces, traces_sha256
from r1probe.provenance import atomic_write_json, cache_dir, sha256_json

STUDENT_NAME = "r1-student"


@dataclass(frozen=True)
class StudentRecipe:
    """What decides the student's weights. ``n_math`` GSM8K train traces + ``n_general`` BELLE traces,
    shuffled together with ``seed``; LoRA (merged at export) or full fine-tuning, ``epochs`` over them.
    ``keypoint``, ``keypoint_chars``: the free text inside a BELLE trace's reasoning
    (``r1probe.distill.traces.general_reasoning``)."""

    base: str = "builtin:qwen2.5-coder-0.5b-instruct"
    n_math: int = 64
    n_general: int = 96
    epochs: float = 1.0
    max_steps: int | None = None
    lr: float = 2e-4
    lora: bool = True
    lora_rank: int = 16
    grad_accum: int = 4
    max_len: int = 320
    warmup_steps: int = 5
    keypoint: str = "clause"
    keypoint_chars: int = 32
    seed: int = 0

    def key(self) -> str:
        """sha256 of the recipe (with the trace builders' version): the cache folder's suffix."""
        return sha256_json({**asdict(self), "traces": "gsm8k-r1+belle-r1/1"})

    def traces(self, root=None) -> list[Trace]:
        """The training traces, in training-file order (the trainer shuffles per epoch with ``seed``)."""
        from r1probe.data.benchmarks import data_root

        r = data_root(root)
        math = gsm8k_r1_traces(r / "gsm8k" / "train.jsonl", limit=self.n_math, seed=self.seed) if self.n_math else []
        gen = belle_r1_traces(r / "belle_eval" / "eval_set.json", limit=self.n_general, seed=self.seed,
                              keypoint=self.keypoint, keypoint_chars=self.keypoint_chars) if self.n_general else []
        out = math + gen
        random.Random(self.seed).shuffle(out)
        return out

    def sft_config(self):
        from r1probe.distill.sft import SFTConfig

        return SFTConfig(lr=self.lr, epochs=self.epochs, max_steps=self.max_steps, batch_size=1,
                         grad_accum=self.grad_accum, max_len=self.max_len, seed=self.seed, lora=self.lora,
                         lora_rank=self.lora_rank, lora_alpha=2.0 * self.lora_rank,
                         warmup_steps=self.warmup_steps, save_every=10)


def student_dir(recipe: StudentRecipe, name: str = STUDENT_NAME) -> Path:
    return cache_dir() / "students" / f"{name}-{recipe.key()[:12]}"


def weights_sha256(folder: str | os.PathLike) -> str:
    """sha256 over every tensor of the folder's ``*.safetensors`` files, in name order: (name, dtype, shape,
    bytes). Independent of sharding and of the files' metadata."""
    from contextlib import ExitStack

    import torch
    from safetensors import safe_open

    h = hashlib.sha256()
    with ExitStack() as stack:
        where = {}
        for f in sorted(Path(folder).glob("*.safetensors")):
            sf = stack.enter_context(safe_open(str(f), framework="pt"))
            where.update({k: sf for k in sf.keys()})
        for k in sorted(where):
            t = where[k].get_tensor(k).contiguous()
            h.update(f"{k}|{t.dtype}|{tuple(t.shape)}|".encode())
            h.update(t.view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def build_student(recipe: StudentRecipe | None = None, *, name: str = STUDENT_NAME, progress: bool = True,
                  root=None, dest: str | os.PathLike | None = None, load_kw: dict | None = None) -> Path:
    """Train the student of ``recipe`` (default :class:`StudentRecipe`) once and return its export folder.

    A finished export of the same recipe is returned at once; an interrupted build resumes from its last
    checkpoint (``<folder>.work``). ``load_kw`` goes to ``load_model`` for the base (dtype, device, chat
    template; default: the hardware's). The folder's ``student.json`` records the recipe, its hash, the
    traces' sha256 and the weights' sha256.
    """
    from r1probe.distill.sft import train_full

    recipe = recipe or StudentRecipe()
    out = Path(dest) if dest else student_dir(recipe, name)
    info = out / "student.json"
    if info.exists():
        return out
    traces = recipe.traces(root)
    if progress:
        print(f"r1probe: {name} ({recipe.base}, recipe {recipe.key()[:12]}) is not built yet; building it once from "
              f"its recipe ({len(traces)} traces, LoRA={recipe.lora}, {recipe.epochs:g} epoch(s); minutes on a CPU) "
              f"-> {out}", file=sys.stderr, flush=True)
    res = train_full(recipe.base, traces, recipe.sft_config(), out, progress=progress, load_kw=load_kw,
                     traces_source=f"recipe {name} {recipe.key()[:12]}: gsm8k-train r1 x{recipe.n_math} + "
                                   f"belle-eval r1 x{recipe.n_general}")
    atomic_write_json(info, {"name": name, "recipe": asdict(recipe), "recipe_sha256": recipe.key(),
                             "traces_sha256": traces_sha256(traces), "weights_sha256": weights_sha256(out),
                             "steps": res.steps, "train_stats": res.stats})
    return out


def resolve_r1_student(progress: bool = True) -> tuple[str, dict]:
    """Entry point of ``builtin:r1-student``: ``(folder, provenance)``, building the student on first use."""
    out = build_student(progress=progress)
    meta = json.loads((out / "student.json").read_text("utf-8"))
    return str(out), {"builtin": STUDENT_NAME, "recipe_sha256": meta["recipe_sha256"],
                      "weights_sha256": meta["weights_sha256"]}
