"""``r1probe serve`` under concurrent clients: requests batched in a short window against one at a time.

Loads the embedded model once and serves it twice on 127.0.0.1 (a free port each time):

  (a) one request per engine call (``max_prompts=1``: the server's batching off);
  (b) the default batching (requests arriving within ``--window-ms`` go into one engine call).

Each time ``--clients`` threads with the official ``openai`` client send one chat request each
(greedy, ``--max-tokens`` new tokens, different built-in zh-harmless prompts) at the same moment.
Prints the wall time, completion tokens per second (from ``usage``), the engine calls made, and
the ratio b/a; checks that both give the same texts.

    OMP_NUM_THREADS=1 python benchmarks/serve.py --clients 8 --max-tokens 32 --threads 1
"""

from __future__ import annotations

import argparse
import json
import threading
import time

import torch

MODEL = "builtin:qwen2.5-coder-0.5b-instruct"


def run(lm, prompts, max_tokens, **serve_kw):
    import openai

    from r1probe.eval.server import serve

    srv = serve(lm, "127.0.0.1", 0, model_name="m", **serve_kw).start()
    client = openai.OpenAI(base_url=srv.url + "/v1", api_key="x", max_retries=0, timeout=3600)
    client.chat.completions.create(model="m", messages=[{"role": "user", "content": "你好"}], max_tokens=2)  # warm up
    calls0 = srv.state.batcher.calls
    out = [None] * len(prompts)
    go = threading.Event()

    def ask(i):
        go.wait()
        r = client.chat.completions.create(model="m", messages=[{"role": "user", "content": prompts[i]}],
                                           max_tokens=max_tokens, temperature=0)
        out[i] = (r.choices[0].message.content, r.usage.completion_tokens)

    ts = [threading.Thread(target=ask, args=(i,)) for i in range(len(prompts))]
    for t in ts:
        t.start()
    t0 = time.perf_counter()
    go.set()
    for t in ts:
        t.join()
    dt = time.perf_counter() - t0
    calls = srv.state.batcher.calls - calls0
    srv.stop()
    toks = sum(o[1] for o in out)
    return {"wall_s": round(dt, 2), "completion_tokens": toks, "tok_per_s": round(toks / dt, 2),
            "engine_calls": calls, "texts": [o[0] for o in out]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=MODEL)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--window-ms", type=float, default=10.0)
    ap.add_argument("--threads", type=int, default=None)
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    from r1probe.data.prompts import load_prompt_set
    from r1probe.models import load_model

    lm = load_model(a.model)
    ps = [p.text for p in load_prompt_set("builtin:zh-harmless", label="harmless").prompts[:a.clients]]
    one = run(lm, ps, a.max_tokens, max_prompts=1)
    batched = run(lm, ps, a.max_tokens, window_s=a.window_ms / 1000.0)
    same = sum(x == y for x, y in zip(one.pop("texts"), batched.pop("texts")))
    print(json.dumps({"model": a.model, "clients": a.clients, "max_tokens": a.max_tokens,
                      "threads": torch.get_num_threads(), "one_at_a_time": one, "batched": batched,
                      "ratio_b_over_a": round(batched["tok_per_s"] / one["tok_per_s"], 2),
                      "same_texts": f"{same}/{len(ps)}"}, indent=1))


if __name__ == "__main__":
    main()
