"""nnsight 0.8 backend: ``TransformersModel(model, tokenizer=tok)`` and one ``trace`` per batch.

nnsight reads the source of the ``with model.trace(...)`` block, so the trace lives here in a
source file. Module outputs are read in execution order and only the gathered positions leave the
trace (``nnsight.save``).
"""

from __future__ import annotations

from typing import Sequence

import torch

from r1probe.extract.store import EMBED, tensor_key


def _envoy(root, path: str):
    for part in path.split("."):
        root = getattr(root, part)
    return root


class NNsightBackend:
    name = "nnsight"

    def __init__(self, lm, keys: Sequence[tuple[str, int]]):
        self.lm, self.keys = lm, list(keys)

    def __enter__(self):
        from nnsight.modeling.transformers import TransformersModel

        self.nn = TransformersModel(self.lm.model, tokenizer=self.lm.tokenizer)
        self.lm.tokenizer.padding_side = "left"
        layout = self.lm.layout
        layers = _envoy(self.nn, layout.layers_path)
        embed = _envoy(self.nn, layout.embed_path)
        plan = []  # (key, envoy, "input"|"output") in execution order
        for site, layer in self.keys:
            key = tensor_key(site, layer)
            if site == "resid_post" and layer == EMBED or site == "resid_pre" and layer == 0:
                plan.append((key, embed, "output"))
            elif site == "resid_pre":
                plan.append((key, layers[layer], "input"))
            elif site == "resid_post":
                plan.append((key, layers[layer], "output"))
            elif site == "attn_out":
                plan.append((key, getattr(getattr(layers[layer], layout.attn_name), layout.attn_out_name), "output"))
            else:
                plan.append((key, getattr(getattr(layers[layer], layout.mlp_name), layout.mlp_out_name), "output"))
        self.plan = plan
        return self

    def __exit__(self, *exc):
        self.nn = None
        return False

    @torch.inference_mode()
    def run(self, input_ids, attention_mask, position_ids, gather) -> dict[str, torch.Tensor]:
        import nnsight

        inputs = {"input_ids": input_ids, "attention_mask": attention_mask, "position_ids": position_ids}
        plan = self.plan
        with self.nn.trace(inputs):
            got, seen = {}, {}
            for key, env, what in plan:
                if (id(env), what) not in seen:
                    h = env.input if what == "input" else env.output
                    seen[(id(env), what)] = h[0] if isinstance(h, (tuple, list)) else h
                got[key] = gather(seen[(id(env), what)])
            got = nnsight.save(got)
        return dict(got)
