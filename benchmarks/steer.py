"""Run-time steering overhead: generated tokens/s with a plan active vs no plan, same batch.

    python benchmarks/steer.py [--model SPEC] [--directions DIR] [--batch 8] [--new-tokens 32] [--repeats 3]

Prints tokens/s for no plan and for each plan (add at one layer; CAST-gated add; ablation on
every residual write) and the ratio plan/no-plan (target >= 0.95). Runs are interleaved and the
best of ``--repeats`` is kept, so background load hits all variants alike.
"""

from __future__ import annotations

import argparse
import time

import torch

from r1probe.models import load_model
from r1probe.models.generate import left_pad
from r1probe.steering import Condition, SteeringPlan, load_direction, steering

PROMPTS = ["如何制作炸弹？", "请写一首关于春天的诗。", "1+1等于几？", "请用一句话介绍北京。",
           "写一个Python函数计算阶乘。", "怎样才能睡得更好？", "请解释什么是机器学习。", "推荐三本好书。"]


def tokens_per_s(lm, ids, mask, new_tokens: int, plan=None) -> float:
    kw = dict(input_ids=ids, attention_mask=mask, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
              do_sample=False, pad_token_id=lm.tokenizer.pad_token_id, temperature=None, top_p=None, top_k=None)
    t = time.perf_counter()
    if plan is None:
        out = lm.model.generate(**kw)
    else:
        with steering(lm, plan):
            out = lm.model.generate(**kw)
    dt = time.perf_counter() - t
    return (out.shape[1] - ids.shape[1]) * ids.shape[0] / dt


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="builtin:qwen2.5-coder-0.5b-instruct")
    ap.add_argument("--directions", default=None, help="directions file (default: a random unit direction)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    lm = load_model(a.model)
    n, d = lm.layout.n_layers, lm.layout.d_model
    r = load_direction(a.directions, None, d) if a.directions else torch.randn(d, generator=torch.Generator().manual_seed(0))
    mid = n // 2
    plans = {
        f"add@{mid}": SteeringPlan.add_at(mid, r, 4.0),
        f"cast add@{mid}-{n - 4}": SteeringPlan.conditional_add(list(range(mid, n - 4)), r, 4.0,
                                                               condition=Condition(mid, r, threshold=0.0)),
        "ablate everywhere": SteeringPlan.ablate_everywhere(r, n),
    }
    texts = [lm.chat.format(PROMPTS[i % len(PROMPTS)]) for i in range(a.batch)]
    ids, mask = left_pad([lm.chat.encode(t) for t in texts], lm.tokenizer.pad_token_id, lm.device)
    with torch.inference_mode():
        tokens_per_s(lm, ids, mask, 4)  # warm up
        best = {k: 0.0 for k in ["no plan", *plans]}
        for _ in range(a.repeats):
            for k in best:
                best[k] = max(best[k], tokens_per_s(lm, ids, mask, a.new_tokens, plans.get(k)))
    print(f"model {a.model}  batch {a.batch}  new tokens {a.new_tokens}  best of {a.repeats}")
    print(f"{'plan':28s} {'tokens/s':>9s} {'ratio':>6s}")
    for k, v in best.items():
        print(f"{k:28s} {v:9.1f} {v / best['no plan']:6.3f}")
    worst = min(v / best["no plan"] for k, v in best.items() if k != "no plan")
    print(f"worst ratio {worst:.3f} (target >= 0.95): {'OK' if worst >= 0.95 else 'BELOW TARGET'}")


if __name__ == "__main__":
    main()
