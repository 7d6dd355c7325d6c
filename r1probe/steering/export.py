"""Export an edited model as a standard checkpoint folder, atomically, with a model card.

The folder holds sharded safetensors, ``config.json``, ``generation_config.json``, the tokenizer
with its chat template, ``r1probe_manifest.json`` and a ``README.md`` model card. It loads with
plain ``AutoModelForCausalLM.from_pretrained(folder)`` (no r1probe import, no remote code): the
edits keep the architecture. It is written to a temporary sibling folder and renamed into place,
so an interrupted export never leaves a half checkpoint at the target.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from r1probe.errors import R1ProbeError
from r1probe.provenance import base_manifest, sha256_file

CARD_TEMPLATE = """---
library_name: transformers
base_model: {base}
tags:
- r1probe
- refusal-direction
- {op}
---
# {name}

`{base}` edited by r1probe with **{op}** (no training, same architecture).
It loads in stock `transformers` / vLLM: `AutoModelForCausalLM.from_pretrained("{name}")`.

## Edit
{edits}

## Provenance
| field | value |
|---|---|
{prov}

## Metrics measured at export
{metrics}

## Caveats
A refusal direction edit changes behaviour on every prompt; measure refusal on harmful *and*
harmless prompts and task accuracy before deploying. Refusal rates are from a keyword judge.
"""


def _table(d: dict) -> str:
    return "\n".join(f"| {k} | {v} |" for k, v in d.items())


def model_card(name: str, manifest: dict) -> str:
    """The README.md text of an exported checkpoint."""
    edits = "\n".join(f"- `{json.dumps(e, ensure_ascii=False)}`" for e in manifest.get("edits", [])) or "- none"
    prov = {"base model": manifest.get("base_model"), "base revision / sha256": manifest.get("base_revision"),
            "directions file": manifest.get("directions_file"), "directions sha256": manifest.get("directions_sha256"),
            "direction key": manifest.get("direction_key"), "r1probe": manifest.get("versions", {}).get("r1probe"),
            "transformers": manifest.get("versions", {}).get("transformers"), "command": f"`{manifest.get('command')}`",
            "created": manifest.get("created")}
    metrics = manifest.get("metrics") or {}
    mtxt = ("| metric | value |\n|---|---|\n" + _table(metrics)) if metrics else "None measured (pass --measure)."
    ops = sorted({e.get("op", "?") for e in manifest.get("edits", [])}) or ["none"]
    return CARD_TEMPLATE.format(name=name, base=manifest.get("base_model"), op="+".join(ops), edits=edits,
                                prov=_table(prov),
                                metrics=mtxt)


def export_checkpoint(lm, out: str | os.PathLike, *, edits: list[dict], directions_file: str | None = None,
                      direction_key: str | None = None, metrics: dict | None = None, overwrite: bool = False,
                      max_shard_size: str = "400MB", extra: dict | None = None) -> Path:
    """Save ``lm`` (a ``LoadedModel`` after edits) to ``out`` atomically; returns the folder."""
    out = Path(out)
    if out.exists() and not overwrite:
        raise R1ProbeError(f"{out} already exists (pass --overwrite to replace it)")
    out.parent.mkdir(parents=True, exist_ok=True)
    prov = getattr(lm, "provenance", {}) or {}
    manifest = base_manifest(
        kind="r1probe.export/1", base_model=lm.spec.raw,
        base_revision=prov.get("revision") or prov.get("gguf_sha256") or lm.source,
        directions_file=str(directions_file) if directions_file else None,
        directions_sha256=sha256_file(_dir_file(directions_file)) if directions_file else None,
        direction_key=direction_key, edits=edits, metrics=metrics or {}, dtype=str(lm.dtype).replace("torch.", ""),
        chat_template_sha256=prov.get("chat_template_sha256"), **(extra or {}))
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.partial-"))
    try:
        lm.model.save_pretrained(tmp, max_shard_size=max_shard_size)
        tok = lm.tokenizer
        old_tpl = getattr(tok, "chat_template", None)
        tok.chat_template = lm.chat.template
        try:
            tok.save_pretrained(tmp)
        finally:
            tok.chat_template = old_tpl
        if getattr(lm.model, "generation_config", None) is not None and not (tmp / "generation_config.json").exists():
            lm.model.generation_config.save_pretrained(tmp)
        (tmp / "r1probe_manifest.json").write_text(json.dumps(manifest, ensure_ascii=False, indent=2, default=str) + "\n",
                                                   encoding="utf-8")
        (tmp / "README.md").write_text(model_card(out.name, manifest), encoding="utf-8")
        _publish_modes(tmp)
        _finalize(tmp, out, overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _publish_modes(folder: Path) -> None:
    """mkdtemp folders are private (0700); give the checkpoint ordinary modes (0755 / 0644 less the umask)."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(folder, 0o755 & ~mask)
    for p in folder.rglob("*"):
        os.chmod(p, (0o755 if p.is_dir() else 0o644) & ~mask)


def _dir_file(path) -> str:
    from r1probe.steering.directions import directions_path

    return str(directions_path(path))


def _finalize(tmp: Path, out: Path, overwrite: bool) -> None:
    """Rename ``tmp`` to ``out``; an existing ``out`` is moved aside first and deleted after."""
    old = None
    if out.exists():
        if not overwrite:
            raise R1ProbeError(f"{out} already exists (pass --overwrite to replace it)")
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
