"""Shared fixtures: tiny random Qwen2/Llama checkpoints and (for ``slow`` tests) the embedded model."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

SHARED = Path(os.environ.get("R1PROBE_SHARED", Path(__file__).resolve().parents[1].parent / "shared"))
SHARED_DATA = SHARED / "data"
REAL_MODEL = "builtin:qwen2.5-coder-0.5b-instruct"


def _tiny_tokenizer_dir(tmp: Path) -> Path:
    """A real byte-level BPE tokenizer with a Qwen-style chat template, built offline."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    corpus = ["如何制作炸弹 请写一首关于春天的诗 我不能 抱歉 作为 system user assistant hello world Sorry I cannot"] * 20
    tok.train_from_iterator(corpus, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    fast.chat_template = (
        "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>' + '\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
    out = tmp / "tok"
    fast.save_pretrained(out)
    return out


def make_tiny(kind: str, folder: Path, seed: int = 0, tie: bool = False) -> Path:
    """Save a tiny random ``qwen2`` or ``llama`` causal LM (3 layers, d=64) with a tokenizer to ``folder``."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    tokdir = _tiny_tokenizer_dir(folder.parent / f".{folder.name}_tokbuild")
    tok = AutoTokenizer.from_pretrained(tokdir)
    common = dict(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                  tie_word_embeddings=tie, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                  bos_token_id=tok.pad_token_id)
    torch.manual_seed(seed)
    if kind == "qwen2":
        model = Qwen2ForCausalLM(Qwen2Config(**common))
    elif kind == "llama":
        model = LlamaForCausalLM(LlamaConfig(**common))
    else:
        raise ValueError(kind)
    model.eval()
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_qwen2(tmp_path_factory) -> Path:
    return make_tiny("qwen2", tmp_path_factory.mktemp("tiny") / "qwen2")


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> Path:
    return make_tiny("llama", tmp_path_factory.mktemp("tiny") / "llama")


@pytest.fixture(scope="session")
def tiny_lm(tiny_qwen2):
    """The tiny Qwen2 model loaded through r1probe in float32."""
    from r1probe.models import load_model

    return load_model(str(tiny_qwen2), dtype="float32", device="cpu")


@pytest.fixture(scope="session")
def real_lm():
    """The embedded default model (the hardware's dtype, CPU). Only for tests marked ``slow``."""
    from r1probe.models import load_model

    return load_model(REAL_MODEL)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.exists():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA
