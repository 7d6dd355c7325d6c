"""Native PyTorch forward hooks: capture only what was asked, then stop the forward pass."""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from r1probe.extract.spec import ExtractError
from r1probe.extract.store import EMBED, tensor_key


class _Stop(Exception):
    """Raised by the last capture hook: nothing deeper is needed (no later blocks, norm or lm_head)."""


def untuple(x):
    return x[0] if isinstance(x, (tuple, list)) else x


def base_model(lm) -> torch.nn.Module:
    """The decoder stack without lm_head (``model.model`` for HF causal LMs)."""
    return getattr(lm.model, lm.layout.layers_path.split(".")[0])


class NativeBackend:
    """Forward hooks on the decoder modules of ``lm.model``.

    The decoder (``model.model``) is called instead of the causal LM, so lm_head never runs; the
    hook that records the deepest requested activation raises ``_Stop`` so later blocks and the
    final norm are skipped too. Each hook reads only the requested positions (``gather``), so a
    batch never holds more than ``[B, P, d]`` per captured key.
    """

    name = "native"

    def __init__(self, lm, keys: Sequence[tuple[str, int]]):
        self.lm, self.keys = lm, list(keys)
        self._handles: list = []
        self._active = False
        self._out: dict[str, torch.Tensor] = {}
        self._gather: Callable | None = None
        self._remaining = 0

    # hooks -------------------------------------------------------------------------------
    def _record(self, key: str, h: torch.Tensor) -> None:
        if not self._active or key in self._out:
            return
        self._out[key] = self._gather(h)
        self._remaining -= 1
        if self._remaining == 0:
            raise _Stop

    def _post(self, key):
        def hook(module, args, output):
            self._record(key, untuple(output))
        return hook

    def _pre(self, key):
        def hook(module, args, kwargs):
            self._record(key, args[0] if args else kwargs["hidden_states"])
        return hook

    def __enter__(self):
        model, layout = self.lm.model, self.lm.layout
        for site, layer in self.keys:
            key = tensor_key(site, layer)
            if site == "resid_post" and layer == EMBED or site == "resid_pre" and layer == 0:
                mod, pre = layout.embed(model), False
            elif site == "resid_post":
                mod, pre = layout.layer(model, layer), False
            elif site == "resid_pre":
                mod, pre = layout.layer(model, layer), True
            elif site == "attn_out":
                mod, pre = layout.attn_out(model, layer), False
            elif site == "mlp_out":
                mod, pre = layout.mlp_out(model, layer), False
            else:
                raise ExtractError(f"site {site!r} at layer {layer} is not supported")
            if pre:
                self._handles.append(mod.register_forward_pre_hook(self._pre(key), with_kwargs=True))
            else:
                self._handles.append(mod.register_forward_hook(self._post(key)))
        return self

    def __exit__(self, *exc):
        for h in self._handles:
            h.remove()
        self._handles.clear()
        return False

    @torch.inference_mode()
    def run(self, input_ids, attention_mask, position_ids, gather) -> dict[str, torch.Tensor]:
        self._out, self._gather = {}, gather
        self._remaining = len({tensor_key(s, l) for s, l in self.keys})
        self._active = True
        try:
            base_model(self.lm)(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                                use_cache=False)
        except _Stop:
            pass
        finally:
            self._active = False
        if self._remaining:
            missing = [tensor_key(s, l) for s, l in self.keys if tensor_key(s, l) not in self._out]
            raise ExtractError(f"native backend: hooks did not fire for {missing[:4]}")
        out, self._out = self._out, {}
        return out
