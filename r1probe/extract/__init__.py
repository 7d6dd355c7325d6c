"""Activation extraction: prompts -> batches -> backend (native / transformer-lens / nnsight) -> store.

``read_activations`` (:mod:`r1probe.extract.read`) is the one activation reader; the store is one of its sinks.
"""

from r1probe.extract.store import ActivationStore, open_store

__all__ = ["ActivationStore", "open_store", "extract_activations", "read_activations"]


def __getattr__(name):  # keep ``import r1probe.extract`` light (no tqdm/transformers until needed)
    if name == "extract_activations":
        from r1probe.extract.api import extract_activations
        return extract_activations
    if name == "read_activations":
        from r1probe.extract.read import read_activations
        return read_activations
    raise AttributeError(name)
