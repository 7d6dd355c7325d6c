"""Generation speed: r1probe's engine against plain ``model.generate`` on the same prompts.

Runs in one process on the embedded model (the hardware's dtype unless ``--dtype``) and the same
N Chinese prompts (half built-in zh-harmful, half zh-harmless, seeded sample; or CHiSafetyBench
questions read from ``--chisafety PATH``), greedy, ``--max-new-tokens`` new tokens:

  (a) plain ``model.generate``: length-sorted, left-padded batches of ``--plain-batch`` (8),
      r1probe's previous generation path;
  (b) the engine (:func:`r1probe.models.engine.generate`) at ``--batch-size`` rows in flight
      (default: the engine's), rows retired as they finish, waiting prompts admitted in their place,
      with the refusal kinds' early stop (``eval.kinds.refusal_done``: a row stops once the default
      judge's verdict on it cannot change; none when that judge reads whole replies);
  (c) optional (``--llama-cpp``): llama.cpp through ``llama-cpp-python`` on the embedded GGUF as
      shipped, one stream, the same chat-formatted prompts.

(a) and (b) run in ``--rounds`` interleaved rounds (the load of a shared machine changes over
minutes). New tokens/s counts the tokens each row really generated (through its end-of-sequence
token). Prints the ratio b/a of new tokens/s and of time, how many greedy token sequences of (b)
equal (a)'s, and whether the verdicts of (b)'s texts equal the verdicts of (a)'s.

    python benchmarks/generate.py                          # 256 prompts, 64 new tokens
    python benchmarks/generate.py --n 32 --max-new-tokens 32 --batch-sizes 16,32,64 --rounds 1  # quick look
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time

import torch

MODEL = "builtin:qwen2.5-coder-0.5b-instruct"


def prompts(n: int, seed: int, chisafety: str | None) -> list[str]:
    if chisafety:  # CHiSafetyBench refusal questions, read from their path (never copied)
        import random

        from r1probe.data.chisafety import load_chisafety_refusal

        items = load_chisafety_refusal(chisafety)
        random.Random(seed).shuffle(items)
        return [it.text for it in items[:n]]
    from r1probe.data.prompts import load_prompt_set

    sets = [load_prompt_set("builtin:zh-harmful", limit=n // 2, seed=seed),
            load_prompt_set("builtin:zh-harmless", limit=n - n // 2, seed=seed)]
    return [t for s in sets for t in s.texts]


def real_tokens(ids: list[int], eos: set[int], pad: int) -> list[int]:
    """The tokens a row really generated from ``generate``'s padded output (through its eos)."""
    out = []
    for t in ids:
        out.append(t)
        if t in eos:
            break
    return out


@torch.inference_mode()
def run_plain(lm, texts: list[str], max_new: int, batch: int) -> tuple[list[list[int]], float]:
    from r1probe.models.engine import eos_ids, pad_id
    from r1probe.models.generate import left_pad, length_sorted_batches

    eos, pad = eos_ids(lm), pad_id(lm)
    enc = [lm.chat.encode(t) for t in texts]
    out: list[list[int] | None] = [None] * len(enc)
    t0 = time.perf_counter()
    for idx in length_sorted_batches([len(e) for e in enc], batch):
        ids, mask = left_pad([enc[i] for i in idx], pad, lm.device)
        seqs = lm.model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new, do_sample=False,
                                 pad_token_id=pad, temperature=None, top_p=None, top_k=None)
        for r, i in enumerate(idx):
            out[i] = real_tokens(seqs[r, ids.shape[1]:].tolist(), eos, pad)
    return out, time.perf_counter() - t0  # type: ignore[return-value]


def run_engine(lm, texts, max_new, batch, done=None):
    from r1probe.models.engine import SamplingParams, generate

    t0 = time.perf_counter()
    res = generate(lm, texts, SamplingParams(max_new_tokens=max_new), batch_size=batch, done=done)
    return [r[0].token_ids for r in res], time.perf_counter() - t0


def run_llama_cpp(lm, texts, max_new, threads):
    from llama_cpp import Llama

    path = gguf_path()
    llm = Llama(model_path=path, n_ctx=1024, n_threads=threads, n_batch=512, verbose=False, logits_all=False)
    n_tok = 0
    t0 = time.perf_counter()
    outs = []
    for t in texts:
        toks = llm.tokenize(t.encode("utf-8"), add_bos=False, special=True)
        r = llm(toks, max_tokens=max_new, temperature=0.0, top_k=1)
        outs.append(r["choices"][0]["text"])
        n_tok += r["usage"]["completion_tokens"]
    return outs, n_tok, time.perf_counter() - t0


def gguf_path() -> str:
    from r1probe.models.builtin import assemble

    return str(assemble("qwen2.5-coder-0.5b-instruct"))


def verdicts(lm, texts: list[str]) -> list[str]:
    from r1probe.eval.judges.refusal import judge_replies

    return [j.verdict.outcome for j in judge_replies(texts, prompt_opened_think=bool(lm.chat.thinks))]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=MODEL)
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--plain-batch", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=None, help="engine rows in flight (default: the engine's)")
    ap.add_argument("--batch-sizes", default=None, help="comma list: time the engine at each (no early stop)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--chisafety", default=None, help="read CHiSafetyBench questions from this path instead")
    ap.add_argument("--llama-cpp", action="store_true", help="also time llama.cpp (llama-cpp-python) on the GGUF")
    ap.add_argument("--rounds", type=int, default=2, help="split the prompts in this many interleaved rounds")
    ap.add_argument("--json", default=None, help="write the results to this JSON file too")
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    from r1probe.eval.judges.refusal import default_judge
    from r1probe.eval.kinds import refusal_done
    from r1probe.models import load_model
    from r1probe.models.engine import DEFAULT_ROWS

    lm = load_model(a.model, dtype=a.dtype)
    tok = lm.tokenizer
    qs = prompts(a.n, a.seed, a.chisafety)
    random.Random(a.seed).shuffle(qs)  # harmful and harmless mixed in every round
    texts = [lm.chat.format(q) for q in qs]
    print(f"model {a.model} dtype {lm.model.dtype} threads {torch.get_num_threads()} prompts {len(texts)} "
          f"max_new_tokens {a.max_new_tokens} load {os.getloadavg()[0]:.2f}", flush=True)
    res: dict = {"n": len(texts), "max_new_tokens": a.max_new_tokens, "dtype": str(lm.model.dtype),
                 "threads": torch.get_num_threads()}
    from r1probe.models.prefix import shared_prefix

    lens = [len(lm.chat.encode(t)) for t in texts]
    res["shared_prefix_tokens"] = shared_prefix([lm.chat.encode(t) for t in texts])
    print(f"prompt tokens min/mean/max {min(lens)}/{sum(lens) / len(lens):.1f}/{max(lens)}; the engine computes the "
          f"{res['shared_prefix_tokens']}-token prefix they share once (plain generate: in every row)", flush=True)
    dec = lambda ids: tok.decode(ids, skip_special_tokens=True)  # noqa: E731

    if a.batch_sizes:
        for b in [int(x) for x in a.batch_sizes.split(",")]:
            ids, dt = run_engine(lm, texts, a.max_new_tokens, b)
            n = sum(map(len, ids))
            print(f"engine batch {b}: {n} new tokens in {dt:.1f} s = {n / dt:.1f} tokens/s", flush=True)
            res[f"engine_b{b}_tps"] = n / dt

    batch = a.batch_size or DEFAULT_ROWS.get(str(lm.device).split(":")[0], 32)
    judge = default_judge()
    if getattr(judge, "reads_chars", None) is None:
        print("early stop: the default judge reads whole replies (no reads_chars), so no row stops early")
    done = refusal_done(judge, thinks=bool(lm.chat.thinks))
    rounds = max(1, a.rounds)
    size = -(-len(texts) // rounds)
    P_ids: list = []
    E_ids: list = []
    p_dt = e_dt = 0.0
    for r in range(rounds):
        chunk = texts[r * size:(r + 1) * size]
        if not chunk:
            break
        # interleaved: the load of a shared machine changes over minutes, and hits both alike
        ids, dt = run_plain(lm, chunk, a.max_new_tokens, a.plain_batch)
        P_ids += ids
        p_dt += dt
        ids, dt = run_engine(lm, chunk, a.max_new_tokens, batch, done=done)
        E_ids += ids
        e_dt += dt
        p_n, e_n = sum(map(len, P_ids)), sum(map(len, E_ids))
        print(f"round {r + 1}/{rounds} ({len(P_ids)} prompts, load {os.getloadavg()[0]:.2f}): "
              f"(a) plain generate batch {a.plain_batch}: {p_n} new tokens in {p_dt:.1f} s = {p_n / p_dt:.2f} tokens/s; "
              f"(b) engine batch {batch} + early stop: {e_n} new tokens in {e_dt:.1f} s = {e_n / e_dt:.2f} tokens/s; "
              f"ratio {(e_n / e_dt) / (p_n / p_dt):.2f}, time ratio {p_dt / e_dt:.2f}", flush=True)
    p_n, e_n = sum(map(len, P_ids)), sum(map(len, E_ids))
    same = sum(x == y for x, y in zip(P_ids, E_ids))
    v_plain = verdicts(lm, [dec(x) for x in P_ids])
    v_engine = verdicts(lm, [dec(x) for x in E_ids])
    res.update(prompts_done=len(P_ids), plain_s=p_dt, plain_tokens=p_n, plain_tps=p_n / p_dt, engine_batch=batch,
               engine_s=e_dt, engine_tokens=e_n, engine_tps=e_n / e_dt, identical_token_ids=same,
               verdicts_identical=v_plain == v_engine, ratio_tps=(e_n / e_dt) / (p_n / p_dt), ratio_time=p_dt / e_dt,
               refusals_plain=v_plain.count("refusal"), refusals_engine=v_engine.count("refusal"),
               judge=judge.describe() if hasattr(judge, "describe") else type(judge).__name__)
    print(f"greedy token ids identical to plain generate: {same}/{len(P_ids)}")
    print(f"verdicts ({res['judge']}): plain {v_plain.count('refusal')} refusals, engine "
          f"{v_engine.count('refusal')}; identical: {v_plain == v_engine} "
          f"({sum(x == y for x, y in zip(v_plain, v_engine))}/{len(P_ids)})")
    print(f"RATIO engine/plain new tokens/s: {res['ratio_tps']:.2f}")
    print(f"RATIO plain time / engine time (same prompts, same verdicts): {res['ratio_time']:.2f}")
    if a.llama_cpp:
        try:
            outs, n_tok, dt = run_llama_cpp(lm, texts, a.max_new_tokens, a.threads or torch.get_num_threads())
            print(f"(c) llama.cpp one stream: {n_tok} new tokens in {dt:.1f} s = {n_tok / dt:.1f} tokens/s")
            res.update(llama_cpp_tps=n_tok / dt, llama_cpp_s=dt)
        except Exception as e:  # noqa: BLE001 - optional comparison
            print(f"(c) llama.cpp: not run ({type(e).__name__}: {e})")
    if a.json:
        with open(a.json, "w", encoding="utf-8") as f:
            json.dump(res, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
