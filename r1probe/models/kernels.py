"""The CPU kernel of a loaded model's linear layers in float32: MKL's sgemm or oneDNN with packed weights.

On CPU, ``torch.nn.functional.linear`` in float32 calls MKL's sgemm on the weight in its plain
``[out, in]`` layout. oneDNN's inner product can run on a copy of the weight reordered once into its
blocked layout (``torch.ops.mkldnn._reorder_linear_weight`` / ``_linear_pointwise``, the kernels
``torch.compile``'s CPU weight freezing calls); on small row counts (the rows of a decoding step) that is
the faster product on the CPUs measured in ``benchmarks/README.md`` (``benchmarks/kernels.py`` measures
it on the machine at hand).

:func:`pack_linears` gives every float32 ``nn.Linear`` of a model a forward that uses such a packed copy
when nothing needs a gradient (``torch.no_grad`` or ``inference_mode``, input on the CPU); with a
gradient, or in any other dtype or device, it is the plain ``F.linear``. The copy is made on first use
and made again when the weight changes (another tensor, or an in-place write such as an edit's
``weight.copy_``, which moves the tensor's version counter); :func:`unpack_linears` removes it all
(fine-tuning does, since an adapter merge may write through ``.data``, which the counter does not see).
Module hooks are untouched: they run around the module as before.

The packed copy costs the memory of the linear weights once more, so :func:`choose` packs only a model
whose linear weights fit twice into the memory available. ``R1PROBE_CPU_LINEAR`` overrides the choice:
``auto`` (default), ``onednn`` or ``mkl``.

The two kernels sum in different orders, so their outputs differ in the last bits (as two batch sizes
of one kernel can); a row's packed product does not depend on the other rows of its batch.
"""

from __future__ import annotations

import os
import types
import weakref

import torch

#: the environment variable that overrides :func:`choose`
ENV = "R1PROBE_CPU_LINEAR"
CHOICES = ("auto", "onednn", "mkl")
#: the row count oneDNN's weight layout is chosen for (a decoding step's rows; any count runs on it)
BATCH_HINT = 128
#: share of the available memory the packed copies may take under ``auto``
MEMORY_SHARE = 0.5
#: module -> (weight key, packed weight); outside the module, so copying a model (``copy.deepcopy``) copies
#: no packed tensor (oneDNN's opaque tensors cannot be copied): a copy packs its own on first use
_PACKED: "weakref.WeakKeyDictionary[torch.nn.Module, tuple]" = weakref.WeakKeyDictionary()


def onednn_available() -> bool:
    """Whether this torch build has oneDNN's packed linear operators."""
    try:
        return bool(torch.backends.mkldnn.is_available()) and hasattr(torch.ops.mkldnn, "_linear_pointwise") \
            and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")
    except (AttributeError, RuntimeError):
        return False


def _available_bytes() -> int | None:
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            for ln in f:
                if ln.startswith("MemAvailable:"):
                    return int(ln.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return None


def linear_bytes(model) -> int:
    """Bytes of the weights of ``model``'s float32 linear layers (each tensor once)."""
    seen, n = set(), 0
    for m in model.modules():
        if isinstance(m, torch.nn.Linear) and m.weight.dtype == torch.float32 and m.weight.data_ptr() not in seen:
            seen.add(m.weight.data_ptr())
            n += m.weight.numel() * 4
    return n


def choose(model, device, dtype, *, setting: str | None = None, available: int | None = None) -> tuple[str, str]:
    """``(kernel, reason)``: ``"onednn"`` (packed) or ``"mkl"`` for a model on ``device`` in ``dtype``.

    ``setting`` (default: the ``R1PROBE_CPU_LINEAR`` environment variable, else ``auto``): ``mkl``
    and ``onednn`` are taken as asked (``onednn`` only where it applies: CPU, float32, operators
    present); ``auto`` packs on a CPU in float32 when the operators are present and the linear weights
    take at most :data:`MEMORY_SHARE` of the memory available (``available`` bytes; default: read from
    ``/proc/meminfo``).
    """
    setting = (setting if setting is not None else os.environ.get(ENV, "auto")).strip().lower() or "auto"
    if setting not in CHOICES:
        from r1probe.errors import R1ProbeError

        raise R1ProbeError(f"{ENV}={setting!r}: choose one of {', '.join(CHOICES)}")
    if str(device).split(":")[0] != "cpu" or dtype != torch.float32:
        return "default", f"{device} {str(dtype).replace('torch.', '')}: torch's own kernels"
    if setting == "mkl":
        return "mkl", f"{ENV}=mkl"
    if not onednn_available():
        return "mkl", "this torch build lacks oneDNN's packed linear"
    if setting == "onednn":
        return "onednn", f"{ENV}=onednn"
    need = linear_bytes(model)
    avail = _available_bytes() if available is None else available
    if avail is not None and need > MEMORY_SHARE * avail:
        return "mkl", (f"packed copies ({need / 2**30:.1f} GiB) would take more than {MEMORY_SHARE:.0%} "
                       f"of the memory available ({avail / 2**30:.1f} GiB)")
    return "onednn", "CPU float32: oneDNN inner product on packed weights (small-batch products)"


def _packed_forward(self, x: torch.Tensor) -> torch.Tensor:
    w = self.weight
    if torch.is_grad_enabled() or x.device.type != "cpu" or x.dtype != torch.float32 or w.dtype != torch.float32:
        return torch.nn.functional.linear(x, w, self.bias)
    key = (w.data_ptr(), w._version, tuple(w.shape))
    packed = _PACKED.get(self)
    if packed is None or packed[0] != key:
        packed = (key, torch.ops.mkldnn._reorder_linear_weight(w.detach(), BATCH_HINT))
        _PACKED[self] = packed
    return torch.ops.mkldnn._linear_pointwise(x, packed[1], self.bias, "none", [], "")


def pack_linears(model) -> int:
    """Give every ``nn.Linear`` of ``model`` the packed forward (see the module docstring); returns
    how many modules have it. Idempotent."""
    n = 0
    for m in model.modules():
        if isinstance(m, torch.nn.Linear):
            if not getattr(m, "_r1probe_packs", False):
                m.forward = types.MethodType(_packed_forward, m)
                m._r1probe_packs = True
            n += 1
    return n


def unpack_linears(model) -> int:
    """Undo :func:`pack_linears` (plain ``F.linear``, packed copies freed); returns how many modules
    were reset."""
    n = 0
    for m in model.modules():
        if getattr(m, "_r1probe_packs", False):
            del m.forward  # the class's forward again
            _PACKED.pop(m, None)
            m._r1probe_packs = False
            n += 1
    return n


def packed_modules(model) -> int:
    """How many modules of ``model`` carry the packed forward."""
    return sum(1 for m in model.modules() if getattr(m, "_r1probe_packs", False))


def has_packed_copy(module) -> bool:
    """Whether ``module`` holds a packed weight now (made on its first gradient-free call)."""
    return module in _PACKED


def apply(model, device, dtype, *, setting: str | None = None) -> tuple[str, str]:
    """:func:`choose` a kernel for ``model`` and put it in place; returns ``(kernel, reason)``."""
    kernel, why = choose(model, device, dtype, setting=setting)
    if kernel == "onednn":
        pack_linears(model)
    else:
        unpack_linears(model)
    return kernel, why
