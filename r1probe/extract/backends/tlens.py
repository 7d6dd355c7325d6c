"""TransformerLens 4 backend: ``TransformerBridge.boot_transformers(..., hf_model=model)`` + ``run_with_cache``.

Booting a bridge on a loaded model rewires it in place (blocks are wrapped in bridge components,
attention is forced to eager). The backend snapshots every module's children, hooks and the
attention implementation, and puts them back on exit, so the shared ``lm.model`` is unchanged.
"""

from __future__ import annotations

from typing import Sequence

import torch

from r1probe.extract.store import EMBED, tensor_key

_SITE_HOOK = {"resid_pre": "hook_resid_pre", "resid_post": "hook_resid_post",
              "attn_out": "hook_attn_out", "mlp_out": "hook_mlp_out"}


def hook_name(site: str, layer: int) -> str:
    if layer == EMBED:
        return "hook_embed"
    return f"blocks.{layer}.{_SITE_HOOK[site]}"


def _from_tl(fn) -> bool:
    mod = getattr(fn, "__module__", None) or getattr(getattr(fn, "func", None), "__module__", "") or ""
    return mod.startswith("transformer_lens")


class _Snapshot:
    """Module tree, hooks and attention implementation of a model, restorable after a bridge boot."""

    def __init__(self, model: torch.nn.Module):
        self.model = model
        self.mods = [(m, dict(m._modules), dict(m._forward_hooks), dict(m._forward_pre_hooks),
                      dict(m._parameters), dict(m._buffers)) for m in model.modules()]
        self.attn = getattr(model.config, "_attn_implementation", None)
        self.training = model.training

    def restore(self) -> None:
        for m, mods, fh, fph, params, bufs in self.mods:
            for d, saved in ((m._modules, mods), (m._parameters, params), (m._buffers, bufs)):
                if d != saved:
                    d.clear()
                    d.update(saved)
            # drop hooks TransformerLens left behind; keep others added meanwhile (e.g. the output
            # capturing hooks transformers installs once per model and remembers with a flag)
            for d in (m._forward_hooks, m._forward_pre_hooks):
                for k in [k for k, fn in d.items() if _from_tl(fn)]:
                    del d[k]
        if self.attn is not None:
            try:
                self.model.set_attn_implementation(self.attn)
            except Exception:  # noqa: BLE001
                self.model.config._attn_implementation = self.attn
        self.model.train(self.training)


class TransformerLensBackend:
    name = "transformer-lens"

    def __init__(self, lm, keys: Sequence[tuple[str, int]]):
        self.lm, self.keys = lm, list(keys)
        self.names = {tensor_key(s, l): hook_name(s, l) for s, l in self.keys}

    def __enter__(self):
        from transformer_lens.model_bridge import TransformerBridge

        self._snap = _Snapshot(self.lm.model)
        try:
            self.bridge = TransformerBridge.boot_transformers(
                self.lm.source, hf_model=self.lm.model, tokenizer=self.lm.tokenizer,
                device=str(self.lm.device), dtype=self.lm.dtype)
        except BaseException:
            self._snap.restore()
            raise
        self.lm.tokenizer.padding_side = "left"
        return self

    def __exit__(self, *exc):
        self.bridge = None
        self._snap.restore()
        self.lm.tokenizer.padding_side = "left"
        return False

    @torch.inference_mode()
    def run(self, input_ids, attention_mask, position_ids, gather) -> dict[str, torch.Tensor]:
        names = sorted(set(self.names.values()))
        _, cache = self.bridge.run_with_cache(input_ids, attention_mask=attention_mask, position_ids=position_ids,
                                              names_filter=names, return_cache_object=False)
        out = {}
        for key, name in self.names.items():
            t = cache.get(name)
            if t is None:  # stored under the canonical name of the alias
                t = next(v for k, v in cache.items() if k.endswith(name.split(".")[-1]) and k.startswith(name.rsplit(".", 1)[0]))
            out[key] = gather(t)
        return out
