"""Where a decoder-only model keeps its modules: one frozen record per family."""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn as nn

from r1probe.errors import UnsupportedModelError

#: Families tested end to end. Any HF decoder whose layers sit at ``model.layers``
#: (mistral, qwen3, gemma...) is accepted with the same generic layout.
TESTED_FAMILIES = ("qwen2", "llama")


@dataclass(frozen=True)
class Layout:
    """Accessors for the parts of a decoder-only causal LM.

    ``layers[i]`` maps the residual stream before block i to after it; ``attn_out``/``mlp_out``
    name the projections that write into the residual stream (o_proj, down_proj).
    """

    family: str
    n_layers: int
    d_model: int
    tied_embeddings: bool
    layers_path: str = "model.layers"
    norm_path: str = "model.norm"
    embed_path: str = "model.embed_tokens"
    lm_head_path: str = "lm_head"
    attn_name: str = "self_attn"
    attn_out_name: str = "o_proj"
    mlp_name: str = "mlp"
    mlp_out_name: str = "down_proj"

    def _get(self, model: nn.Module, path: str) -> nn.Module:
        m = model
        for part in path.split("."):
            m = getattr(m, part)
        return m

    def layers(self, model: nn.Module) -> nn.ModuleList:
        return self._get(model, self.layers_path)

    def layer(self, model: nn.Module, i: int) -> nn.Module:
        return self.layers(model)[i]

    def norm(self, model: nn.Module) -> nn.Module:
        return self._get(model, self.norm_path)

    def embed(self, model: nn.Module) -> nn.Embedding:
        return self._get(model, self.embed_path)

    def lm_head(self, model: nn.Module) -> nn.Linear:
        return self._get(model, self.lm_head_path)

    def attn(self, model: nn.Module, i: int) -> nn.Module:
        return getattr(self.layer(model, i), self.attn_name)

    def mlp(self, model: nn.Module, i: int) -> nn.Module:
        return getattr(self.layer(model, i), self.mlp_name)

    def attn_out(self, model: nn.Module, i: int) -> nn.Linear:
        return getattr(self.attn(model, i), self.attn_out_name)

    def mlp_out(self, model: nn.Module, i: int) -> nn.Linear:
        return getattr(self.mlp(model, i), self.mlp_out_name)


def detect_layout(model: nn.Module) -> Layout:
    """Build the layout of a loaded HF causal LM, or raise a one-line error naming the supported families."""
    cfg = getattr(model, "config", None)
    family = getattr(cfg, "model_type", type(model).__name__)
    inner = getattr(model, "model", None)
    layers = getattr(inner, "layers", None)
    if not isinstance(layers, nn.ModuleList) or len(layers) == 0 or not hasattr(inner, "embed_tokens") \
            or not hasattr(model, "lm_head") or not hasattr(inner, "norm"):
        raise UnsupportedModelError(
            f"unsupported architecture {family!r}: r1probe supports decoder-only models with layers at "
            f"model.layers (tested: {', '.join(TESTED_FAMILIES)}; e.g. all DeepSeek-R1-Distill models)")
    first = layers[0]
    attn, mlp = getattr(first, "self_attn", None), getattr(first, "mlp", None)
    if attn is None or mlp is None or not hasattr(attn, "o_proj") or not hasattr(mlp, "down_proj"):
        raise UnsupportedModelError(
            f"unsupported architecture {family!r}: decoder blocks lack self_attn.o_proj / mlp.down_proj "
            f"(tested: {', '.join(TESTED_FAMILIES)})")
    tied = bool(getattr(cfg, "tie_word_embeddings", False)) or (
        model.lm_head.weight.data_ptr() == inner.embed_tokens.weight.data_ptr())
    return Layout(family=family, n_layers=len(layers), d_model=int(cfg.hidden_size), tied_embeddings=tied)
