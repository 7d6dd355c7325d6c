"""float32 against bfloat16 on the machine at hand: the embedded model's forward and generation.

Loads the embedded model once per dtype in this process and times, on the same built-in Chinese
prompts (zh-harmful and zh-harmless, seeded sample):

  forward: the decoder body (no lm_head) on batches of ``--batch`` prompts padded to ``--tokens``
           tokens, best of ``--repeats``;
  generate: plain ``model.generate`` greedy, ``--new-tokens`` new tokens at batch ``--batch``.

Prints tokens/s for each dtype, the ratio bfloat16 / float32, the dtype ``auto`` picks here and why,
and the CPU model and flags it ran on.

    python benchmarks/dtype.py                  # forward and generation
    python benchmarks/dtype.py --no-generate    # forward only (quick)
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

MODEL = "builtin:qwen2.5-coder-0.5b-instruct"


def cpu_line() -> str:
    from r1probe.models.loader import BF16_CPU_FLAGS, cpu_flags

    name = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            name = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    flags = cpu_flags()
    have = [f for f in ("avx2", "avx512f", *BF16_CPU_FLAGS, "amx_tile") if f in flags]
    return f"{name}; flags: {', '.join(have) or 'none of avx2/avx512f/amx'}; torch threads {torch.get_num_threads()}"


def prompts(n: int) -> list[str]:
    from r1probe.data import load_prompt_set

    half = n // 2
    sets = [load_prompt_set("builtin:zh-harmful").sample(half, seed=0),
            load_prompt_set("builtin:zh-harmless").sample(n - half, seed=0)]
    return [p.text for s in sets for p in s]


def time_forward(lm, texts, tokens: int, batch: int, repeats: int) -> float:
    enc = lm.tokenizer([lm.chat.format(t) for t in texts], return_tensors="pt", padding="max_length",
                       truncation=True, max_length=tokens)
    body = lm.model.model
    best = float("inf")
    with torch.inference_mode():
        body(input_ids=enc.input_ids[:batch], attention_mask=enc.attention_mask[:batch])  # warm-up
        for _ in range(repeats):
            t0 = time.perf_counter()
            for i in range(0, len(texts), batch):
                body(input_ids=enc.input_ids[i:i + batch], attention_mask=enc.attention_mask[i:i + batch])
            best = min(best, time.perf_counter() - t0)
    return len(texts) * tokens / best


def time_generate(lm, texts, new_tokens: int, batch: int) -> float:
    enc = lm.tokenizer([lm.chat.format(t) for t in texts], return_tensors="pt", padding=True)
    made = 0
    t0 = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(texts), batch):
            out = lm.model.generate(input_ids=enc.input_ids[i:i + batch], attention_mask=enc.attention_mask[i:i + batch],
                                    max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                                    pad_token_id=lm.tokenizer.pad_token_id)
            made += (out.shape[1] - enc.input_ids.shape[1]) * out.shape[0]
    return made / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=32, help="prompts")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--tokens", type=int, default=64, help="padded prompt length for the forward timing")
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--no-generate", action="store_true")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    from r1probe.models import load_model
    from r1probe.models.loader import auto_dtype

    texts = prompts(a.n)
    rows = {}
    for name in ("float32", "bfloat16"):
        lm = load_model(MODEL, dtype=name, device="cpu")
        fwd = time_forward(lm, texts, a.tokens, a.batch, a.repeats)
        gen = None if a.no_generate else time_generate(lm, texts[:a.batch], a.new_tokens, a.batch)
        rows[name] = (fwd, gen)
        print(f"{name:9s} forward {fwd:8.1f} tokens/s" + ("" if gen is None else f"   generate {gen:6.1f} new tokens/s"),
              flush=True)
        del lm
    f32, b16 = rows["float32"], rows["bfloat16"]
    print(f"ratio bfloat16/float32: forward {b16[0] / f32[0]:.2f}"
          + ("" if f32[1] is None else f", generate {b16[1] / f32[1]:.2f}"))
    dtype, why = auto_dtype("cpu")
    print(f"auto picks {str(dtype).removeprefix('torch.')}: {why}")
    print(f"CPU: {cpu_line()}")


if __name__ == "__main__":
    main()
