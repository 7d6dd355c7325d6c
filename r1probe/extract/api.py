"""``extract_activations``: prompts -> length-sorted left-padded batches -> backend -> activation store."""

from __future__ import annotations

import time
from typing import Any, Sequence

import torch
from tqdm.auto import tqdm

from r1probe.data.prompts import PromptSet
from r1probe.errors import DataError
from r1probe.extract import heap
from r1probe.extract.backends import canonical_backend, get_backend
from r1probe.extract.batching import auto_token_budget, encode_prompts, plan_batches, plan_shards
from r1probe.extract.read import capture_keys, prefix_to_share, read_batches
from r1probe.extract.spec import ExtractError, parse_layers, parse_positions, parse_sites
from r1probe.extract.store import ActivationStore, StoreWriter, label_counts, layer_name, tensor_key
from r1probe.models.generate import forward_overhead
from r1probe.models.loader import DTYPES, model_provenance
from r1probe.provenance import base_manifest, sha256_json

def _as_sets(prompts) -> list[PromptSet]:
    if isinstance(prompts, PromptSet):
        sets = [prompts]
    elif isinstance(prompts, (list, tuple)) and prompts and all(isinstance(p, PromptSet) for p in prompts):
        sets = list(prompts)
    elif isinstance(prompts, (list, tuple)):
        sets = [PromptSet("prompts", list(prompts))]
    else:
        raise DataError(f"prompts must be a PromptSet or a list of PromptSets, got {type(prompts).__name__}")
    for s in sets:
        if not len(s):
            raise DataError(f"prompt set {s.name!r} is empty")
    if not sets:
        raise DataError("no prompt sets given")
    return sets


def _eos_ids(lm) -> set[int]:
    ids: set[int] = set()
    for src in (getattr(lm.model, "generation_config", None), lm.model.config):
        e = getattr(src, "eos_token_id", None)
        if e is not None:
            ids.update(e if isinstance(e, (list, tuple)) else [e])
    if lm.tokenizer.eos_token_id is not None:
        ids.add(lm.tokenizer.eos_token_id)
    return ids


@torch.inference_mode()
def _generate(lm, ids, mask, n: int, eos: set[int], pad: int) -> tuple[torch.Tensor, list[int]]:
    """Greedy continuation of a left-padded batch: ``(new_tokens [B, n'], lengths incl. the EOS token)``."""
    seqs = lm.model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=n, do_sample=False,
                             temperature=None, top_p=None, top_k=None, pad_token_id=pad)
    new = seqs[:, ids.shape[1]:].cpu()
    lens = []
    for row in new.tolist():
        k = next((i for i, t in enumerate(row) if t in eos), None)
        lens.append(len(row) if k is None else k + 1)
    return new, lens


def extract_activations(lm, prompts: PromptSet | Sequence[PromptSet], *, layers: Any = None,
                        positions: Any = "post", out_dir, backend: str = "native",
                        batch_size: int | str = "auto", sites: Sequence[str] | str = ("resid_post",),
                        generate: int = 0, progress: bool = True, system: str | None = None,
                        close_think: bool = False, think: str | None = None, store_dtype: str | torch.dtype | None = None,
                        shard_rows: int = 256, overwrite: bool = False) -> ActivationStore:
    """Capture activations of ``lm`` on ``prompts`` and write (or resume) a store at ``out_dir``.

    * ``layers``: None/"all", "0-23", "8,12,16", "embed,all" or ints (-1 = embedding output).
    * ``positions``: "post" (post-instruction template tokens), "last", "mean" (instruction
      tokens), "gen"/"gen_mean" (with ``generate``), negative offsets, or a comma list.
    * ``sites``: resid_post (default), resid_pre, attn_out, mlp_out.
    * ``batch_size``: rows per batch, or "auto" (a token budget per batch; see ``auto_token_budget``).
    * ``generate``: greedily generate this many tokens first and also capture them.
    * ``think``: ``"open"`` / ``"closed"`` end each prompt inside / after a reasoning block (``<think>\n`` /
      ``<think>\n\n</think>\n\n``, ``ChatFormatter.render``); the post-instruction positions then include it.
    * ``store_dtype``: dtype on disk (default: the model's); ``get`` always returns float32.

    Rerunning with the same arguments skips finished shards. Returns the opened store.
    """
    sets = _as_sets(prompts)
    all_prompts = [p for s in sets for p in s.prompts]
    rows = [{"id": p.id, "label": p.label, "category": p.category, "set": s.name}
            for s in sets for p in s.prompts]
    layer_list = parse_layers(layers, lm.layout.n_layers)
    site_list = parse_sites(sites)
    keys = capture_keys(layer_list, site_list)
    pos_spec = parse_positions(positions)
    backend = canonical_backend(backend)
    if generate < 0:
        raise ExtractError(f"--generate {generate}: must be >= 0")
    if shard_rows < 1:
        raise ExtractError(f"shard_rows {shard_rows}: must be >= 1")
    sdtype = lm.dtype if store_dtype in (None, "auto") else (
        store_dtype if isinstance(store_dtype, torch.dtype) else DTYPES.get(str(store_dtype)))
    if sdtype is None:
        raise ExtractError(f"--store-dtype {store_dtype!r}: choose one of {', '.join(sorted(DTYPES))}")

    encs = encode_prompts(lm, all_prompts, system=system, close_think=close_think, think=think)
    lengths = [len(e) for e in encs]
    n_post = min(e.n_post for e in encs)
    if pos_spec.post and n_post == 0:
        raise ExtractError("--positions post: the chat template leaves no tokens after the user message")
    names = pos_spec.resolve(n_post, generate)
    too_far = [n for n in names if isinstance(n, int) and -n > min(lengths)]
    if too_far:
        raise ExtractError(f"--positions {too_far[0]}: the shortest prompt has only {min(lengths)} tokens")
    for e, p in zip(encs, all_prompts):
        for k, (s, t) in enumerate([e.instr]):
            if "mean" in names and t <= s:
                raise DataError(f"prompt {p.id!r}: no instruction tokens to average")
    for s in sets:  # empty texts are caught by the loaders; guard Python callers too
        for p in s.prompts:
            if not p.text.strip():
                raise DataError(f"prompt {p.id!r} in {s.name!r} is empty")

    prov = model_provenance(lm)
    sets_info = [{"name": s.name, "sha256": s.sha256, "n": len(s), "label_counts": s.label_counts()} for s in sets]
    config = {"model": prov, "prompt_sets": [(s["name"], s["sha256"]) for s in sets_info],
              "layers": layer_list, "sites": site_list, "positions": names, "generate": generate,
              "system": system, "close_think": close_think, **({"think": think} if think else {}), "store_dtype": str(sdtype), "backend": backend,
              "shard_rows": shard_rows}
    manifest = base_manifest(
        config_sha256=sha256_json(config), model=prov, chat_template=lm.chat.kind,
        chat_template_sha256=prov.get("chat_template_sha256"),
        dtype=str(lm.dtype).replace("torch.", ""), store_dtype=str(sdtype).replace("torch.", ""),
        prompt_sets=sets_info, prompts_sha256=sha256_json([s["sha256"] for s in sets_info]),
        n_rows=len(rows), label_counts=label_counts(rows), layers=layer_list,
        layer_names=[layer_name(l) for l in layer_list], n_layers=len(layer_list),
        sites=site_list, keys=[tensor_key(s, l) for s, l in keys], positions=names,
        positions_spec=positions if isinstance(positions, str) else list(positions),
        post_instruction_tokens=n_post, post_instruction_suffix=lm.chat.post_instruction_suffix(close_think, think),
        backend=backend, generate=generate, system=system, close_think=close_think, think=think,
        d_model=lm.layout.d_model, layer_convention="resid_post layer i = hidden_states[i+1]; -1 = embeddings",
        tokens={"min": min(lengths), "max": max(lengths), "total": sum(lengths)})
    for r, e in zip(rows, encs):
        r["n_tokens"] = len(e)
    shards = plan_shards(lengths, shard_rows)
    writer = StoreWriter(out_dir, manifest, rows, shards, overwrite=overwrite)
    pending = writer.pending()

    tok = lm.tokenizer
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    eos = _eos_ids(lm)
    if batch_size == "auto":
        budget, fixed = auto_token_budget(lm, max(lengths), generate), None
    else:
        fixed, budget = int(batch_size), None
        if fixed < 1:
            raise ExtractError(f"--batch-size {batch_size}: must be >= 1 or 'auto'")
    device = lm.device
    n_pending = sum(len(shards[i]) for i in pending)
    t0 = time.perf_counter()
    bar = tqdm(total=n_pending, unit="prompt", desc=f"extract ({backend})", disable=not progress)

    def extend(rows, ids, mask):  # --generate: the batch grows by its greedy continuation
        new, gen_lens = _generate(lm, ids, mask, generate, eos, pad)
        gmask = torch.tensor([[1 if k < g else 0 for k in range(new.shape[1])] for g in gen_lens], dtype=mask.dtype)
        gen_texts.extend(tok.decode(new[r, :g], skip_special_tokens=True) for r, g in enumerate(gen_lens))
        return torch.cat([ids, new.to(device)], 1), torch.cat([mask, gmask.to(device)], 1), gen_lens

    with get_backend(backend)(lm, keys) as be:
        for si in pending:
            parts: dict[tuple[str, int], list[torch.Tensor]] = {k: [] for k in keys}
            gen_texts: list[str] | None = [] if generate else None

            def sink(rows, acts):  # the store's shard is the sink of the reader
                for k, v in acts.items():
                    parts[k].append(v.to("cpu", sdtype))
                bar.update(len(rows))
            # a batch of `generate` grows by the generated tokens: size the budget on the full width
            # the rows' cost is their tokens after a prefix the reader computes once
            n_pre = 0 if generate or not getattr(be, "supports_past", False) else \
                prefix_to_share(lm, [encs[i] for i in shards[si]], names)
            batches = plan_batches(shards[si], [lengths[i] + generate - n_pre for i in range(len(lengths))], fixed,
                                   budget, overhead=forward_overhead(lm.device))
            read_batches(be, lm, encs, batches, names, keys, sink, generate=extend if generate else None,
                         after_prefix=n_pre)
            # the shard's large blocks are mapped and unmapped, so they never fragment the heap; the
            # forward passes run at the default threshold (see r1probe.extract.heap)
            with heap.extraction_heap():
                writer.write(si, {tensor_key(*k): torch.cat(v, 0) for k, v in parts.items()}, generated=gen_texts)
                del parts
    bar.close()
    secs = time.perf_counter() - t0
    writer.finish(rows=rows, run={"seconds": round(secs, 3), "rows_extracted": n_pending,
                                  "prompts_per_s": round(n_pending / secs, 2) if n_pending and secs > 0 else None,
                                  "batching": {"batch_size": fixed} if fixed else {"token_budget": budget},
                                  "resumed_shards": len(shards) - len(pending)})
    return ActivationStore(out_dir)
