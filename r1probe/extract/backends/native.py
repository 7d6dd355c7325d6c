"""The native backend: PyTorch forward hooks of the activation reader (:mod:`r1probe.extract.read`).

Captures only what was asked (the requested positions of each batch) and stops the forward pass
after the deepest requested module; lm_head and the final norm never run.
"""

from __future__ import annotations

from r1probe.extract.read import ActivationHooks


class NativeBackend(ActivationHooks):
    """Forward hooks on the decoder modules of ``lm.model`` (see :class:`r1probe.extract.read.ActivationHooks`)."""

    name = "native"


__all__ = ["NativeBackend"]
