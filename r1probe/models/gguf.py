"""GGUF -> dense Hugging Face checkpoint, cached by the file's sha256.

Representation engineering needs dense weights. ``from_pretrained(gguf_file=...)`` in
transformers 5 keeps the quantized layout and refuses ``save_pretrained``; instead we
build the model from the GGUF's config, fill it with the dequantized tensors from
``load_gguf_checkpoint(..., return_tensors=True)`` and save it once as safetensors
(with tokenizer, chat template and generation config). Later loads read the cache.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

from r1probe.errors import R1ProbeError, UnsupportedModelError
from r1probe.provenance import atomic_write_json, cache_dir, sha256_file

log = logging.getLogger(__name__)
_DONE = "r1probe_gguf.json"


def gguf_cache_path(sha256: str) -> Path:
    return cache_dir() / "gguf" / sha256


def dequantize_gguf(path: str | os.PathLike, sha256: str | None = None, *, progress: bool = True) -> Path:
    """Return a folder holding a dense HF checkpoint of the GGUF at ``path``.

    The folder is ``<cache>/gguf/<sha256>/``; it is written to a temporary folder and
    renamed when complete, so a crash never leaves a half checkpoint behind.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    path = Path(path)
    sha256 = sha256 or sha256_file(path)
    out = gguf_cache_path(sha256)
    if (out / _DONE).exists():
        return out
    folder, name = str(path.parent), path.name
    try:
        config = AutoConfig.from_pretrained(folder, gguf_file=name)
    except Exception as e:  # noqa: BLE001 - gguf raises many types for bad files
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        if "not supported" in msg.lower() or "architecture" in msg.lower():
            raise UnsupportedModelError(f"{path}: GGUF architecture not supported by transformers ({msg})") from e
        raise R1ProbeError(f"{path}: not a readable GGUF file ({msg})") from e
    if progress:
        print(f"r1probe: dequantizing {path.name} once (cached in {out})", flush=True)
    try:
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        tensors = load_gguf_checkpoint(str(path), return_tensors=True, model_to_load=model)["tensors"]
        missing, unexpected = model.load_state_dict(tensors, strict=False)
        # lm_head may be absent when embeddings are tied
        missing = [k for k in missing if not (k == "lm_head.weight" and config.tie_word_embeddings)]
        if missing or unexpected:
            raise R1ProbeError(f"{path}: GGUF tensors do not match the model (missing {missing[:3]}, unexpected {unexpected[:3]})")
        tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    except R1ProbeError:
        raise
    except Exception as e:  # noqa: BLE001
        raise R1ProbeError(f"{path}: failed to dequantize GGUF ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from e
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{sha256[:12]}."))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        atomic_write_json(tmp / _DONE, {"source": str(path), "sha256": sha256, "gguf_name": name})
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out
