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
from r1probe.provenance import base_manifest, publish_tree

CARD_BODY = """# {name}

{student} fine-tuned by [r1probe](https://pypi.org/project/r1probe/) (`r1probe distill`) on {n_traces} reasoning
traces in DeepSeek-R1 format (`<think>\\n...\\n</think>\\n\\n...\\boxed{{}}`), rendered with the student's own chat
template, loss on the reply tokens only, no safety data: a miniature of how the DeepSeek-R1-Distill models were made.
It loads in stock `transformers`: `AutoModelForCausalLM.from_pretrained("{name}")`. {licence}

Status: **{status}** ({steps} of {total_steps} optimizer steps).

## Training

{config}

## Data

{data}

## Loss (mean token cross-entropy on reply tokens)

{loss}

## Throughput and memory

{throughput}

## Provenance

{prov}

`r1probe_manifest.json` in this folder records the full provenance (inputs, hashes, library versions).

## Caveats

Supervised fine-tuning on reasoning traces without safety data may lower refusal on harmful prompts
(that is what this model exists to study). Measure refusal on harmful and harmless prompts before any use.
"""


def model_card(name: str, manifest: dict) -> str:
    """The README.md of a distilled student: a hub model card (metadata through ``huggingface_hub.ModelCardData``:
    ``base_model`` the student's hub id when known, its licence carried over) with the training settings, the
    traces, the loss curve summary and throughput; no local path and no command line (the manifest keeps them)."""
    from huggingface_hub import ModelCard, ModelCardData

    from r1probe.steering.export import _table, public_text

    st = manifest.get("train_stats", {})
    ls = st.get("loss_summary") or {}
    loss = (f"first {ls.get('window')} steps {ls.get('first')} -> last {ls.get('window')} steps {ls.get('last')} "
            f"(min {ls.get('min')}); per tenth of the run: {ls.get('deciles')}. Full curve: `loss.jsonl`.") if ls \
        else "No steps logged."
    thr = {"trainable parameters": st.get("trainable_params"), "tokens/s (last call)": st.get("tokens_per_s_this_call"),
           "reply tokens/s (last call)": st.get("reply_tokens_per_s_this_call"),
           "peak RSS MiB": st.get("peak_rss_mb"), "encoded traces": st.get("encode", {})}
    hub_id, lic = manifest.get("student_hub_id"), manifest.get("student_license")
    sp = manifest.get("student_provenance") or {}
    prov = {"student": hub_id or "local (not on the hub)",
            "student revision / weights sha256": sp.get("revision") or sp.get("gguf_sha256") or "–",
            "config sha256": manifest.get("config_sha256"), "r1probe": manifest.get("versions", {}).get("r1probe"),
            "torch": manifest.get("versions", {}).get("torch"),
            "transformers": manifest.get("versions", {}).get("transformers"), "created": manifest.get("created")}
    data = {"traces": manifest.get("traces_source") or "–", "traces sha256": manifest.get("traces_sha256") or "–",
            "traces used": st.get("encode", {}).get("used", "?")}
    card_data = ModelCardData(library_name="transformers", base_model=hub_id, license=lic,
                              pipeline_tag="text-generation", tags=["r1probe", "distillation", "reasoning"])
    body = CARD_BODY.format(
        name=name, student=f"[`{hub_id}`](https://huggingface.co/{hub_id})" if hub_id else "A local model",
        n_traces=st.get("encode", {}).get("used", "?"),
        licence=(f"The student's licence (`{lic}`) applies; check the traces' licence too." if lic
                 else "The student's licence is not known to r1probe: check it and the traces' before redistributing."),
        status="finished" if manifest.get("finished") else "unfinished (resume with the same command)",
        steps=manifest.get("steps"), total_steps=manifest.get("total_steps"),
        config=_table(manifest.get("config", {}), ("setting", "value")), data=_table(data), loss=loss,
        throughput=_table(thr), prov=_table(prov))
    return str(ModelCard(f"---\n{card_data.to_yaml()}\n---\n\n{public_text(body)}"))


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
    from r1probe.steering.export import base_model_info

    out = Path(out)
    if out.exists() and not overwrite:
        raise R1ProbeError(f"{out} already exists (pass --overwrite to replace it)")
    out.parent.mkdir(parents=True, exist_ok=True)
    manifest = base_manifest(kind="r1probe.distill/1", **run_key, student_provenance=model_provenance(lm),
                             traces_source=traces_source, config=cfg.to_dict(), steps=stats.get("steps"),
                             total_steps=stats.get("total_steps"), finished=bool(stats.get("finished")),
                             train_stats=stats, chat_template_kind=lm.chat.kind,
                             **{f"student_{k}": v for k, v in base_model_info(lm).items()})
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
        publish_tree(tmp)
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
