"""Where a decoder-only model keeps its modules: one frozen record per family, found by an
ordered list of detectors.

:func:`detect_layout` asks each registered detector in turn (``detector(model) -> Layout | None``)
and takes the first answer; :func:`register_layout` adds one (see docs/DEVELOPING.md, "A model
layout"). The generic detector recognises HF decoders whose blocks sit at ``model.layers``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

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


#: A layout detector: returns the Layout of a model it recognises, else None. It may carry a
#: ``families`` attribute (a short description of what it recognises) used in the error message.
LayoutDetector = Callable[[nn.Module], Optional[Layout]]

LAYOUT_DETECTORS: list[LayoutDetector] = []


def register_layout(detector: LayoutDetector, *, first: bool = False) -> LayoutDetector:
    """Add ``detector`` to the ordered list :func:`detect_layout` tries (at the end, or at the front
    with ``first=True``); registering the same detector twice keeps one entry. Returns it, so it
    can be used as a decorator."""
    if detector in LAYOUT_DETECTORS:
        LAYOUT_DETECTORS.remove(detector)
    if first:
        LAYOUT_DETECTORS.insert(0, detector)
    else:
        LAYOUT_DETECTORS.append(detector)
    return detector


def supported_families() -> list[str]:
    """What the registered detectors recognise, in order (their ``families``, else their name)."""
    return [str(getattr(d, "families", None) or getattr(d, "__name__", type(d).__name__)) for d in LAYOUT_DETECTORS]


def detect_layout(model: nn.Module) -> Layout:
    """The layout from the first registered detector that recognises ``model``, or a one-line
    :class:`UnsupportedModelError` naming the supported families."""
    for detector in LAYOUT_DETECTORS:
        layout = detector(model)
        if layout is not None:
            return layout
    cfg = getattr(model, "config", None)
    family = getattr(cfg, "model_type", type(model).__name__)
    raise UnsupportedModelError(f"unsupported architecture {family!r}: no layout detector recognises it; "
                                f"supported: {'; '.join(supported_families())}")


def generic_decoder_layout(model: nn.Module) -> Layout | None:
    """HF decoder-only models with blocks at ``model.layers`` (``self_attn.o_proj``, ``mlp.down_proj``),
    ``model.embed_tokens``, ``model.norm`` and ``lm_head``: qwen2, llama, mistral, qwen3, gemma, ..."""
    cfg = getattr(model, "config", None)
    family = getattr(cfg, "model_type", type(model).__name__)
    inner = getattr(model, "model", None)
    layers = getattr(inner, "layers", None)
    if not isinstance(layers, nn.ModuleList) or len(layers) == 0 or not hasattr(inner, "embed_tokens") \
            or not hasattr(model, "lm_head") or not hasattr(inner, "norm"):
        return None
    first = layers[0]
    attn, mlp = getattr(first, "self_attn", None), getattr(first, "mlp", None)
    if attn is None or mlp is None or not hasattr(attn, "o_proj") or not hasattr(mlp, "down_proj"):
        return None
    tied = bool(getattr(cfg, "tie_word_embeddings", False)) or (
        model.lm_head.weight.data_ptr() == inner.embed_tokens.weight.data_ptr())
    return Layout(family=family, n_layers=len(layers), d_model=int(cfg.hidden_size), tied_embeddings=tied)


generic_decoder_layout.families = (f"decoder-only models with blocks at model.layers (tested: "
                                   f"{', '.join(TESTED_FAMILIES)}; e.g. all DeepSeek-R1-Distill models)")
register_layout(generic_decoder_layout)
