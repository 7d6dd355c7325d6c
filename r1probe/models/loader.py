"""Load a model from any spec into a ``LoadedModel`` (model, tokenizer, layout, chat formatter)."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any

import torch

from r1probe.errors import R1ProbeError, UnsupportedModelError
from r1probe.models.builtin import BUILTINS, assemble, resolve_built
from r1probe.models.chat import ChatFormatter, resolve_template
from r1probe.models import kernels
from r1probe.models.gguf import dequantize_gguf
from r1probe.models.layout import Layout, detect_layout
from r1probe.models.spec import ModelSpec, parse_spec
from r1probe.provenance import sha256_file, sha256_text

log = logging.getLogger(__name__)

DTYPES = {"bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float16": torch.float16,
          "fp16": torch.float16, "float32": torch.float32, "fp32": torch.float32}


#: CPU flags (as /proc/cpuinfo names them) whose presence means native bfloat16 matrix multiplication.
BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")


def cpu_flags() -> set[str]:
    """The CPU's feature flags: ``/proc/cpuinfo`` on Linux, else what torch reports about bf16 support."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    flags = set()
    probes = {"avx512_bf16": "_is_avx512_bf16_supported", "amx_bf16": "_is_amx_tile_supported"}
    for flag, fn in probes.items():
        check = getattr(torch.cpu, fn, None)
        if check is not None and check():
            flags.add(flag)
    return flags


#: ``ONEDNN_MAX_CPU_ISA`` values that keep oneDNN (torch's CPU matmul for bfloat16) off native bfloat16 kernels
ISA_BELOW_BF16 = frozenset({"SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI"})

#: CPU flags that decide which kernels (and so which dtype) run fast
SPEED_CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")


def machine() -> dict:
    """What a timing ran on: CPU model, cores, the speed-relevant CPU flags present, torch threads,
    the CPU dtype ``auto`` picks and why, and the CUDA device if any."""
    import platform

    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            name = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), name)
    except OSError:
        pass
    flags = cpu_flags()
    dt, why = auto_dtype("cpu", flags)
    out = {"cpu": name, "cores": os.cpu_count(), "flags": [f for f in SPEED_CPU_FLAGS if f in flags],
           "torch_threads": torch.get_num_threads(), "cpu_dtype_auto": str(dt).replace("torch.", ""),
           "cpu_dtype_reason": why}
    if torch.cuda.is_available():
        out["cuda"] = torch.cuda.get_device_name(0)
    return out


def auto_dtype(device: str, flags: set[str] | None = None) -> tuple[torch.dtype, str]:
    """The fast dtype for ``device`` and why: ``(dtype, reason)``.

    CUDA: bfloat16 where the GPU supports it, else float16. CPU: bfloat16 only where matrix
    multiplication is native (``amx_bf16`` or ``avx512_bf16`` among the CPU flags); without them
    PyTorch runs bfloat16 matmuls on a slow fallback path, so float32 is the fast choice.
    Other devices (mps...): float16.
    """
    kind = str(device).split(":")[0]
    if kind == "cuda":
        if torch.cuda.is_bf16_supported():
            return torch.bfloat16, f"{torch.cuda.get_device_name(device)} supports bfloat16"
        return torch.float16, f"{torch.cuda.get_device_name(device)} lacks bfloat16: float16"
    if kind != "cpu":
        return torch.float16, f"device {device}: float16"
    flags = cpu_flags() if flags is None else flags
    native = [f for f in BF16_CPU_FLAGS if f in flags]
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA", "").strip().upper()
    if native and isa in ISA_BELOW_BF16:
        return torch.float32, (f"ONEDNN_MAX_CPU_ISA={isa} keeps oneDNN below its bfloat16 kernels "
                               f"(the CPU has {'+'.join(native)}): float32")
    if native:
        return torch.bfloat16, f"CPU has {'+'.join(native)} (native bfloat16 matmul)"
    return torch.float32, f"CPU lacks {' and '.join(BF16_CPU_FLAGS)} (bfloat16 matmul would use a slow fallback)"


def resolve_dtype(dtype: str | torch.dtype | None, device: str) -> tuple[torch.dtype, str]:
    """``(dtype, reason)``: the named dtype, or for ``None``/``"auto"`` the hardware's fast one (``auto_dtype``)."""
    if isinstance(dtype, torch.dtype):
        return dtype, "requested"
    if dtype in (None, "auto"):
        return auto_dtype(device)
    if dtype not in DTYPES:
        raise R1ProbeError(f"--dtype {dtype!r}: choose auto or one of {', '.join(sorted(DTYPES))}")
    return DTYPES[dtype], "requested"


def _contiguous_input(module, args):
    return (args[0].contiguous(),) + tuple(args[1:])


#: a hook that changes no values and acts on each token alone (the engine may share a prompt prefix under it)
_contiguous_input.value_preserving = True


def make_lm_head_contiguous(model) -> None:
    """Work around a large slowdown in generation on CPU.

    ``generate`` runs the prefill with ``logits_to_keep=1``, which hands ``lm_head`` a
    non-contiguous ``[B, 1, d]`` slice; ``F.linear`` then takes a batched-matmul path that
    expands the ``[V, d]`` weight per row (costly for a large vocabulary). Making the slice
    contiguous first restores the plain GEMM. The hook changes no values.
    """
    head = model.get_output_embeddings()
    if head is not None and not getattr(head, "_r1probe_contiguous", False):
        head.register_forward_pre_hook(_contiguous_input)
        head._r1probe_contiguous = True


def resolve_device(device: str | None) -> str:
    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


@dataclass
class LoadedModel:
    """A loaded causal LM with what the rest of r1probe needs to know about it."""

    model: Any
    tokenizer: Any
    layout: Layout
    chat: ChatFormatter
    spec: ModelSpec
    source: str  # folder the weights were read from
    provenance: dict = field(default_factory=dict)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def describe(self) -> dict:
        cfg = self.model.config
        return {
            "spec": self.spec.raw,
            "architecture": self.layout.family,
            "model_class": type(self.model).__name__,
            "n_layers": self.layout.n_layers,
            "hidden_size": self.layout.d_model,
            "vocab_size": int(cfg.vocab_size),
            "dtype": str(self.dtype).replace("torch.", ""),
            "device": str(self.device),
            "tied_embeddings": self.layout.tied_embeddings,
            "chat_template": self.chat.kind,
            "thinks": self.chat.thinks,
            "loaded_from": self.source,
            **self.provenance,
        }


def _resolve_source(spec: ModelSpec) -> tuple[str, dict]:
    """Turn a spec into a local folder (or hub id) plus provenance fields."""
    if spec.kind == "builtin" and spec.target not in BUILTINS:
        return resolve_built(spec.target)
    if spec.kind == "builtin":
        model = BUILTINS[spec.target]
        gguf = assemble(spec.target)
        return str(dequantize_gguf(gguf, model.sha256)), {"gguf_sha256": model.sha256, "builtin": spec.target}
    if spec.kind == "gguf":
        sha = sha256_file(spec.target)
        return str(dequantize_gguf(spec.target, sha)), {"gguf_sha256": sha, "gguf_file": spec.target}
    if spec.kind == "dir":
        return spec.target, {}
    return spec.target, {"revision": spec.revision or "main"}


def load_model(spec: str | ModelSpec, *, revision: str | None = None, dtype: str | torch.dtype | None = None,
               device: str | None = None, device_map: str | None = None, trust_remote_code: bool = False,
               chat_template: str | None = None) -> LoadedModel:
    """Load ``spec`` (hub id, folder, .gguf or builtin:NAME) for inference in eval mode.

    dtype ``None``/``"auto"`` picks the hardware's fast dtype (``auto_dtype``: bfloat16 on GPUs and on CPUs
    with native bf16 matmul, float32 on other CPUs) and records why; ``device_map="auto"`` spreads a large model over GPUs
    (accelerate). ``trust_remote_code`` is never set unless asked for.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    if os.environ.get("R1PROBE_VERBOSE", "0") in ("", "0"):
        hf_logging.disable_progress_bar()  # the per-load "Loading weights" bar; R1PROBE_VERBOSE=1 keeps it
    if not isinstance(spec, ModelSpec):
        spec = parse_spec(spec, revision)
    device = resolve_device(device)
    torch_dtype, dtype_reason = resolve_dtype(dtype, device)
    source, prov = _resolve_source(spec)
    kw = {"revision": spec.revision} if spec.kind == "hub" and spec.revision else {}
    try:
        config = AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code, **kw)
    except Exception as e:  # noqa: BLE001
        raise R1ProbeError(f"{spec.raw}: cannot read model config ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from e
    try:
        from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
        if config.model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and not trust_remote_code:
            raise UnsupportedModelError(
                f"{spec.raw}: architecture {config.model_type!r} is not a causal LM known to transformers "
                f"(r1probe supports decoder-only models such as qwen2 and llama)")
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code, **kw)
        model = AutoModelForCausalLM.from_pretrained(
            source, dtype=torch_dtype, trust_remote_code=trust_remote_code,
            device_map=device_map, **kw)
    except R1ProbeError:
        raise
    except Exception as e:  # noqa: BLE001
        raise R1ProbeError(f"{spec.raw}: failed to load ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from e
    if device_map is None:
        model.to(device)
    model.eval()
    model.requires_grad_(False)
    make_lm_head_contiguous(model)
    linear_kernel, linear_reason = kernels.apply(model, device, torch_dtype)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    layout = detect_layout(model)
    tpl, kind = resolve_template(chat_template, tokenizer)
    chat = ChatFormatter(tokenizer, tpl, kind)
    prov = {**prov, "chat_template_sha256": sha256_text(tpl), "dtype_reason": dtype_reason,
            "linear_kernel": linear_kernel, "linear_kernel_reason": linear_reason}
    if spec.kind == "hub":
        commit = getattr(config, "_commit_hash", None)
        if commit:
            prov["revision"] = commit
    return LoadedModel(model, tokenizer, layout, chat, spec, source, prov)


def model_provenance(lm: LoadedModel) -> dict:
    """The fields a manifest records about the model."""
    return {"model": lm.spec.raw, "loaded_from": lm.source, "dtype": str(lm.dtype).replace("torch.", ""),
            "n_layers": lm.layout.n_layers, "hidden_size": lm.layout.d_model, **lm.provenance}
