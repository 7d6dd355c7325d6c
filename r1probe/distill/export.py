"""Export a distilled student as a standard checkpoint folder with a model card, atomically.

The folder loads with plain ``AutoModelForCausalLM.from_pretrained(folder)``: safetensors weights,
``config.json``, ``generation_config.json``, the tokenizer with the chat template the student was trained
with, ``loss.jsonl``, ``r1probe_manifest.json`` and a ``README.md`` card (student, traces sha256, config,
loss curve summary, throughput). It is written to a temporary sibling folder and renamed into place.
(``r1probe.steering.export`` writes edit exports; its card describes weight edits "with no training", so
distillation keeps this small writer of its own.)
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from r1probe.errors import R1ProbeError
from r1probe.provenance import base_manifest

CARD = """---
library_name: transformers
base_model: {student}
tags:
- r1probe
- distillation
- reasoning
---
# {name}

`{student}` fine-tuned by r1probe (`r1probe distill`) on {n_traces} reasoning traces in DeepSeek-R1 format
(`<think>\\n...\\n</think>\\n\\n...\\boxed{{}}`), rendered with the student's own chat template, loss on the reply
tokens only, no safety data: a miniature of how the DeepSeek-R1-Distill models were made.
It loads in stock `transformers`: `AutoModelForCausalLM.from_pretrained("{name}")`.

Status: **{status}** ({steps} of {total_steps} optimizer steps).

## Training
| setting | value |
|---|---|
{config}

## Loss (mean token cross-entropy on reply tokens)
{loss}

## Throughput and memory
{throughput}

## Provenance
| field | value |
|---|---|
{prov}

## Caveats
Supervised fine-tuning on reasoning traces without safety data may lower refusal on harmful prompts
(that is what this model exists to study). Measure refusal on harmful and harmless prompts before any use.
"""


def _table(d: dict) -> str:
    return "\n".join(f"| {k} | {v} |" for k, v in d.items())


def model_card(name: str, manifest: dict) -> str:
    st = manifest.get("train_stats", {})
    ls = st.get("loss_summary") or {}
    loss = (f"first {ls.get('window')} steps {ls.get('first')} -> last {ls.get('window')} steps {ls.get('last')} "
            f"(min {ls.get('min')}); per tenth of the run: {ls.get('deciles')}. Full curve: `loss.jsonl`.") if ls \
        else "No steps logged."
    thr = {"trainable parameters": st.get("trainable_params"), "tokens/s (last call)": st.get("tokens_per_s_this_call"),
           "reply tokens/s (last call)": st.get("reply_tokens_per_s_this_call"),
           "peak RSS MiB": st.get("peak_rss_mb"), "encoded traces": json.dumps(st.get("encode", {}))}
    prov = {"student": manifest.get("student"), "student provenance": f"`{json.dumps(manifest.get('student_provenance', {}), ensure_ascii=False)}`",
            "traces": manifest.get("traces_source"), "traces sha256": manifest.get("traces_sha256"),
            "config sha256": manifest.get("config_sha256"), "r1probe": manifest.get("versions", {}).get("r1probe"),
            "torch": manifest.get("versions", {}).get("torch"),
            "transformers": manifest.get("versions", {}).get("transformers"),
            "command": f"`{manifest.get('command')}`", "created": manifest.get("created")}
    return CARD.format(name=name, student=manifest.get("student"), n_traces=st.get("encode", {}).get("used", "?"),
                       status="finished" if manifest.get("finished") else "unfinished (resume with the same command)",
                       steps=manifest.get("steps"), total_steps=manifest.get("total_steps"),
                       config=_table(manifest.get("config", {})), loss=loss, throughput=_table(thr), prov=_table(prov))


def finished_export(out: str | os.PathLike, run_key: dict) -> dict | None:
    """The manifest of a finished export at ``out`` made by the same run (student, traces, config), else None."""
    try:
        m = json.loads((Path(out) / "r1probe_manifest.json").read_text("utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    if m.get("kind") == "r1probe.distill/1" and m.get("finished") and all(m.get(k) == v for k, v in run_key.items()):
        return m
    return None


def export_student(lm, out: str | os.PathLike, *, cfg, run_key: dict, stats: dict, loss_rows: list[dict],
                   traces_source: str | None = None, overwrite: bool = False, max_shard_size: str = "400MB") -> Path:
    """Save the trained ``lm`` (a ``LoadedModel``) to ``out`` atomically; returns the folder."""
    from r1probe.models import model_provenance

    out = Path(out)
    if out.exists() and not overwrite:
        raise R1ProbeError(f"{out} already exists (pass --overwrite to replace it)")
    out.parent.mkdir(parents=True, exist_ok=True)
    manifest = base_manifest(kind="r1probe.distill/1", **run_key, student_provenance=model_provenance(lm),
                             traces_source=traces_source, config=cfg.to_dict(), steps=stats.get("steps"),
                             total_steps=stats.get("total_steps"), finished=bool(stats.get("finished")),
                             train_stats=stats, chat_template_kind=lm.chat.kind)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.partial-"))
    try:
        lm.model.save_pretrained(tmp, max_shard_size=max_shard_size)
        tok = lm.tokenizer
        old_tpl, old_side = getattr(tok, "chat_template", None), tok.padding_side
        tok.chat_template = lm.chat.template
        try:
            tok.save_pretrained(tmp)
        finally:
            tok.chat_template = old_tpl
            tok.padding_side = old_side
        if getattr(lm.model, "generation_config", None) is not None and not (tmp / "generation_config.json").exists():
            lm.model.generation_config.save_pretrained(tmp)
        (tmp / "loss.jsonl").write_text("".join(json.dumps(r) + "\n" for r in loss_rows), encoding="utf-8")
        (tmp / "r1probe_manifest.json").write_text(json.dumps(manifest, ensure_ascii=False, indent=2, default=str) + "\n",
                                                   encoding="utf-8")
        (tmp / "README.md").write_text(model_card(out.name, manifest), encoding="utf-8")
        old = None
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            os.replace(out, old)
        os.replace(tmp, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
