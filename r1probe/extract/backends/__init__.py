"""Three interchangeable capture backends behind one interface.

A backend is a context manager built from ``(lm, keys)`` where ``keys`` are ``(site, layer)``
pairs in execution order; ``run(input_ids, attention_mask, position_ids, gather)`` returns
``{"<site>.<layer>": gather(activation)}``. ``native`` (PyTorch forward hooks, stops after the
deepest requested module, never runs the final norm or lm_head) is the default;
``transformer-lens`` (``TransformerBridge.boot_transformers(..., hf_model=model)``) and
``nnsight`` (``TransformersModel(model, tokenizer=tok)``) wrap the same loaded model and are
there to cross-check it (a test shows all three agree).
"""

from __future__ import annotations

from r1probe.extract.spec import ExtractError

BACKENDS = ("native", "transformer-lens", "nnsight")
ALIASES = {"tl": "transformer-lens", "transformer_lens": "transformer-lens", "transformerlens": "transformer-lens",
           "torch": "native", "hooks": "native"}


def get_backend(name: str):
    """The backend class for ``name`` (importing optional libraries only when chosen)."""
    key = ALIASES.get(name.lower(), name.lower())
    if key == "native":
        from r1probe.extract.backends.native import NativeBackend
        return NativeBackend
    if key == "transformer-lens":
        try:
            import transformer_lens  # noqa: F401
        except ImportError:
            raise ExtractError("--backend transformer-lens needs transformer-lens>=4: pip install 'r1probe[backends]'") from None
        from r1probe.extract.backends.tlens import TransformerLensBackend
        return TransformerLensBackend
    if key == "nnsight":
        try:
            import nnsight  # noqa: F401
        except ImportError:
            raise ExtractError("--backend nnsight needs nnsight>=0.8: pip install 'r1probe[backends]'") from None
        from r1probe.extract.backends.nnsight_backend import NNsightBackend
        return NNsightBackend
    raise ExtractError(f"--backend {name!r}: choose one of {', '.join(BACKENDS)}")


def canonical_backend(name: str) -> str:
    get_backend(name)
    return ALIASES.get(name.lower(), name.lower())
