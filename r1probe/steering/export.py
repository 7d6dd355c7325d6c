"""Export an edited model as a standard checkpoint folder, atomically, with a model card.

The folder holds sharded safetensors, ``config.json``, ``generation_config.json``, the tokenizer
with its chat template, ``r1probe_manifest.json`` and a ``README.md`` model card. It loads with
plain ``AutoModelForCausalLM.from_pretrained(folder)`` (no r1probe import, no remote code): the
edits keep the architecture (``gate-mlp`` grows ``intermediate_size``, and the saved config says so). It is written to a temporary sibling folder and renamed into place,
so an interrupted export never leaves a half checkpoint at the target.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path

from r1probe.errors import R1ProbeError
from r1probe.provenance import base_manifest, publish_tree, sha256_file

#: strings in a card that look like local paths (absolute, ``./``, ``../``, ``~/``): replaced by their last part
_LOCAL_PATH = re.compile(r"(?<![\w:/.~-])(?:~|\.{1,2})?/[^\s,;()'\"`|\]\[]+")


def public_text(text: str) -> str:
    """``text`` with every local path (``/abs/dir/f.jsonl``, ``./f``, ``../f``, ``~/f``) cut to its last part."""
    return _LOCAL_PATH.sub(lambda m: m.group(0).rstrip("/").rsplit("/", 1)[-1] or "/", text)


def _public(v):
    if isinstance(v, str):
        return public_text(v)
    if isinstance(v, dict):
        return {k: _public(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_public(x) for x in v]
    return v


def base_model_info(lm) -> dict:
    """What a model card can say about the model ``lm`` was loaded from: ``hub_id`` (a Hugging Face hub id, or
    None when the spec is a local folder or file of unknown origin) and ``license`` (a hub licence id or None).

    Shipped builtins carry both in their registry record (a built one, like a local folder, its card's licence); a hub spec is its own id, its licence read from the hub card
    in the local cache (no network); a local folder's licence is read from its ``README.md`` card."""
    spec = lm.spec
    if spec.kind == "builtin":
        from r1probe.models.builtin import BUILTINS

        b = BUILTINS.get(spec.target)
        if b is None:  # built from a recipe: its folder's card says what it was made from
            data = _card_data(Path(lm.source) / "README.md")
            return {"hub_id": None, "license": getattr(data, "license", None)}
        return {"hub_id": getattr(b, "hub_id", None), "license": getattr(b, "license", None)}
    if spec.kind == "hub":
        return {"hub_id": spec.target, "license": _cached_hub_license(spec.target, spec.revision)}
    if spec.kind == "dir":
        data = _card_data(Path(spec.target) / "README.md")
        return {"hub_id": None, "license": getattr(data, "license", None)}
    return {"hub_id": None, "license": None}


def _card_data(path: Path):
    from huggingface_hub import ModelCard

    try:
        return ModelCard.load(path).data if path.is_file() else None
    except Exception:  # noqa: BLE001 - a malformed card only means no licence to carry over
        return None


def _cached_hub_license(repo_id: str, revision: str | None) -> str | None:
    try:
        from huggingface_hub import hf_hub_download

        path = hf_hub_download(repo_id, "README.md", revision=revision, local_files_only=True)
    except Exception:  # noqa: BLE001 - not cached: the card says nothing about the licence
        return None
    return getattr(_card_data(Path(path)), "license", None)


def _probe_fit_data(directions_file) -> list[dict]:
    """The prompt sets the directions were estimated from (name, n, sha256), read from ``probe.json`` beside them."""
    if not directions_file:
        return []
    try:
        d = Path(_dir_file(directions_file)).parent
        meta = json.loads((d / "probe.json").read_text("utf-8"))
    except (OSError, ValueError, R1ProbeError):
        return []
    sets = ((meta.get("store") or {}).get("manifest") or {}).get("prompt_sets") or []
    return [{"name": s.get("name"), "n": s.get("n"), "sha256": s.get("sha256")} for s in sets]


def _cell(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (dict, list)):
        return "`" + json.dumps(v, ensure_ascii=False, separators=(", ", ": ")).replace("|", "\\|") + "`"
    return str(v).replace("|", "\\|")


def _table(rows: dict, head: tuple[str, str] = ("field", "value")) -> str:
    return "\n".join([f"| {head[0]} | {head[1]} |", "|---|---|"] + [f"| {k} | {_cell(v)} |" for k, v in rows.items()])


def metrics_table(metrics: dict) -> str:
    """Metrics as a markdown table; a metric is a number/string, or a dict with ``value`` and optionally
    ``ci`` ``[low, high]`` (95% interval), ``n`` and ``judge``."""
    if not metrics:
        return "None measured (`r1probe edit --measure FILE` records refusal rates with 95% Wilson intervals)."
    lines = ["| metric | value | 95% interval | n |", "|---|---|---|---|"]
    for k, v in metrics.items():
        if isinstance(v, dict):
            ci = v.get("ci")
            fmt = (lambda x: f"{x:.1%}") if v.get("unit") == "rate" else _cell
            ci_txt = f"{fmt(ci[0])} – {fmt(ci[1])}" if ci else "–"
            val = v.get("value")
            lines.append(f"| {_cell(k)} | {fmt(val) if val is not None else '–'} | {ci_txt} | {v.get('n', '–')} |")
        else:
            lines.append(f"| {_cell(k)} | {_cell(v)} | – | – |")
    return "\n".join(lines)


def _reads_txt(reads: dict) -> list[str]:
    """The model card's line on the items tuning read (``tuning_reads.json``; ids only, never prompt text)."""
    if not reads:
        return []
    sizes = ", ".join(f"{k} {len(v)}" for k, v in sorted(reads.items()))
    return [f"Tuning (direction selection and edit fit) read {sum(len(v) for v in reads.values())} items ({sizes}); "
            "their ids are in `tuning_reads.json`, and `r1probe eval --split report` checks them against the "
            "items it reports (`tuning/report overlap: N items`).", ""]


def model_card(name: str, manifest: dict) -> str:
    """The README.md text of an exported checkpoint: a hub model card (YAML metadata through
    ``huggingface_hub.ModelCardData``) naming the base model by hub id and carrying its licence, the edit and
    its settings, the data the direction and the edit were fitted on, and the measured metrics. It holds no
    local path and no command line (``r1probe_manifest.json`` keeps the machine-readable provenance)."""
    from huggingface_hub import ModelCard, ModelCardData

    edits = manifest.get("edits", [])
    ops = sorted({e.get("op", "?") for e in edits}) or ["none"]
    hub_id, lic = manifest.get("base_model_hub_id"), manifest.get("base_model_license")
    data = ModelCardData(library_name="transformers", base_model=hub_id, license=lic,
                         pipeline_tag="text-generation", tags=["r1probe", "refusal-direction", *ops])
    base_txt = f"[`{hub_id}`](https://huggingface.co/{hub_id})" if hub_id else "a local model"
    edit_txt = []
    for e in edits:
        e = _public(e)
        settings = {k: v for k, v in e.items() if k not in ("op", "fit_data")}
        edit_txt.append(f"### {e.get('op', '?')}\n\n" + (_table(settings, ("setting", "value")) if settings else "No settings."))
        if e.get("fit_data"):
            edit_txt.append(f"Fitted on: {e['fit_data']}")
    sets = _public(manifest.get("fit_data") or [])
    fit = (["The refusal direction (key `{}`) was estimated from these prompt sets:".format(
        manifest.get("direction_key") or "chosen"), "", "| prompt set | n | sha256 |", "|---|---|---|"]
        + [f"| {_cell(s.get('name'))} | {s.get('n')} | `{s.get('sha256')}` |" for s in sets]) if sets else \
        [f"Direction key `{manifest.get('direction_key') or 'chosen'}`; the prompt sets it was estimated from are not "
         "recorded beside the directions file."]
    rev = manifest.get("base_revision")
    prov = {"base model": hub_id or "local (not on the hub)",
            "base revision / weights sha256": rev if rev and "/" not in str(rev) else "–",
            "directions sha256": manifest.get("directions_sha256") or "–",
            "dtype": manifest.get("dtype"), "chat template sha256": manifest.get("chat_template_sha256") or "–",
            "r1probe": manifest.get("versions", {}).get("r1probe"),
            "transformers": manifest.get("versions", {}).get("transformers"), "created": manifest.get("created")}
    lic_txt = (f"The base model's licence (`{lic}`) applies." if lic
               else "The base model's licence is not known to r1probe: check it before redistributing.")
    body = "\n".join([
        f"# {public_text(name)}", "",
        f"{base_txt} with its weights edited by [r1probe](https://pypi.org/project/r1probe/) "
        f"(**{'+'.join(ops)}**; no training, same architecture). It loads in stock `transformers` and vLLM: "
        f"`AutoModelForCausalLM.from_pretrained(\"{public_text(name)}\")`. {lic_txt}", "",
        "## Edit", "", *("\n\n".join(edit_txt) or "No edit.",), "",
        "## Data", "", *fit, "", *_reads_txt(manifest.get("tuning_reads") or {}),
        "## Metrics measured at export", "", metrics_table(_public(manifest.get("metrics") or {})), "",
        "## Provenance", "", _table(prov), "",
        "`r1probe_manifest.json` in this folder records the full provenance (inputs, hashes, library versions).", "",
        "## Caveats", "",
        "A refusal-direction edit changes behaviour on every prompt: measure refusal on harmful *and* harmless "
        "prompts and task accuracy before deploying. Refusal rates here come from the keyword refusal rule.", ""])
    return str(ModelCard(f"---\n{data.to_yaml()}\n---\n\n{public_text(body)}"))


def export_checkpoint(lm, out: str | os.PathLike, *, edits: list[dict], directions_file: str | None = None,
                      direction_key: str | None = None, metrics: dict | None = None, overwrite: bool = False,
                      max_shard_size: str = "400MB", extra: dict | None = None) -> Path:
    """Save ``lm`` (a ``LoadedModel`` after edits) to ``out`` atomically; returns the folder."""
    out = Path(out)
    if out.exists() and not overwrite:
        raise R1ProbeError(f"{out} already exists (pass --overwrite to replace it)")
    out.parent.mkdir(parents=True, exist_ok=True)
    prov = getattr(lm, "provenance", {}) or {}
    reads, edits = _tuning_reads(edits, directions_file)
    manifest = base_manifest(tuning_reads=reads,
        kind="r1probe.export/1", base_model=lm.spec.raw,
        base_revision=prov.get("revision") or prov.get("gguf_sha256") or lm.source,
        directions_file=str(directions_file) if directions_file else None,
        directions_sha256=sha256_file(_dir_file(directions_file)) if directions_file else None,
        direction_key=direction_key, edits=edits, metrics=metrics or {}, dtype=str(lm.dtype).replace("torch.", ""),
        chat_template_sha256=prov.get("chat_template_sha256"), fit_data=_probe_fit_data(directions_file),
        **{f"base_model_{k}": v for k, v in base_model_info(lm).items()}, **(extra or {}))
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
        (tmp / "tuning_reads.json").write_text(json.dumps(reads, ensure_ascii=False) + "\n", encoding="utf-8")
        (tmp / "r1probe_manifest.json").write_text(json.dumps(manifest, ensure_ascii=False, indent=2, default=str) + "\n",
                                                   encoding="utf-8")
        (tmp / "README.md").write_text(model_card(out.name, manifest), encoding="utf-8")
        publish_tree(tmp)
        _finalize(tmp, out, overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _tuning_reads(edits: list[dict], directions_file) -> tuple[dict, list[dict]]:
    """The ids every tuning step behind this checkpoint read (``{set: [ids]}``: the edits' fit data and the
    ``tuning_reads.json`` beside the directions, e.g. the probe selection's), and the edit records without them."""
    from r1probe.data.partitions import TUNING_READS, load_tuning_reads, merge_reads

    found = [e.get("tuning_reads") or {} for e in edits]
    if directions_file:
        p = Path(directions_file)
        rec = (p if p.is_dir() else p.parent) / TUNING_READS
        if rec.exists():
            found.append(load_tuning_reads(rec))
    return merge_reads(*found), [{k: v for k, v in e.items() if k != "tuning_reads"} for e in edits]


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
