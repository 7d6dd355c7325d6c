"""Activation extraction: prompts -> batches -> backend (native / transformer-lens / nnsight) -> store."""

from r1probe.extract.store import ActivationStore, open_store

__all__ = ["ActivationStore", "open_store", "extract_activations"]


def __getattr__(name):  # keep ``import r1probe.extract`` light (no tqdm/transformers until needed)
    if name == "extract_activations":
        from r1probe.extract.api import extract_activations
        return extract_activations
    raise AttributeError(name)
