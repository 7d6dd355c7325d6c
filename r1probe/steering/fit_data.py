"""The texts the rank-one read/write edit (``rank1-gate``) is fitted on: built-in splits or prompt files.

Harmful side: the prompts of a harmful set's *train* split (built-in ``zh-harmful``: 362 prompts),
read at their post-instruction tokens. Benign side, every token of: the harmless set's train-split
prompts (chat-formatted, no reply) and the first ``n_gsm`` GSM8K *train* problems with their worked
solutions (solution cut at ``gsm_tokens`` tokens), so the read vector stays silent on ordinary
requests and on mathematical reasoning. None of these overlap the evaluation items (held-out
harmless test split, CHiSafetyBench, GSM8K test).

``borderline=N`` also adds the first ``N`` prompts of the Chinese borderline *contrast* split
(``r1probe.data.borderline``: CValues questions on sensitive topics that should be answered, disjoint
from its ``report`` split) to the benign side, so the read vector learns to stay silent on sensitive
but answerable requests too.

``file_fit_data`` fits on prompt files instead (``read_prompts``, any format of ``r1probe.data.prompts.read_prompt_file``; benign rows
followed by their answer when they have one).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field


@dataclass
class FitData:
    harmful: list[str]               # raw prompts (the edit chat-formats them)
    benign: list[list[int]]          # token ids, chat-formatted
    description: str                 # for the model card
    ids: dict = field(default_factory=dict)  # {set: [ids]} of every item read (r1probe.data.partitions)

    def summary(self) -> dict:
        return {"n_harmful": len(self.harmful), "n_benign_texts": len(self.benign), "fit_data": self.description}


def default_fit_data(lm, *, harmful: str = "builtin:zh-harmful", harmless: str = "builtin:zh-harmless",
                     data_root: str | os.PathLike | None = None, n_gsm: int = 200, gsm_tokens: int = 256,
                     seed: int = 0, borderline: int = 0) -> FitData:
    """Harmful train prompts vs benign token lists (harmless train prompts + GSM8K train 1..n_gsm
    [+ ``borderline`` CValues contrast prompts])."""
    from r1probe.data.benchmarks import load_gsm8k
    from r1probe.data.prompts import load_prompt_set

    from r1probe.data.partitions import merge_reads, prompt_reads

    harm_ps = load_prompt_set(harmful, split="train", seed=seed).prompts
    safe_ps = load_prompt_set(harmless, split="train", seed=seed).prompts
    harm = [p.text for p in harm_ps]
    benign = [lm.chat.encode(lm.chat.format(p.text)) for p in safe_ps]
    n_safe = len(benign)
    gsm = load_gsm8k(data_root, "train")[:n_gsm] if n_gsm else []
    read_ids = merge_reads(prompt_reads(harmful, [p.id for p in harm_ps]),
                           prompt_reads(harmless, [p.id for p in safe_ps]),
                           {"gsm8k": [f"gsm8k-train/{it.id.split('/')[-1]}" for it in gsm]})
    for it in gsm:
        ids = lm.chat.encode(lm.chat.format(it.meta["question"]))
        benign.append(ids + lm.tokenizer(it.solution, add_special_tokens=False)["input_ids"][:gsm_tokens])
    desc = (f"harmful: {harmful} train split (seed {seed}, {len(harm)}); benign: {harmless} train prompts "
            f"({n_safe}) + GSM8K train 1-{len(gsm)} (question + solution, <= {gsm_tokens} tokens)")
    if borderline:
        from r1probe.data.borderline import borderline_splits

        border = borderline_splits(data_root, english_contrast=False)["contrast"][:borderline]
        benign += [lm.chat.encode(lm.chat.format(it.text)) for it in border]
        desc += f" + CValues borderline contrast split 1-{len(border)} (prompts)"
        read_ids = merge_reads(read_ids, {"cvalues": [it.id for it in border]})
    return FitData(harm, benign, desc, read_ids)


def read_prompts(path: str | os.PathLike, limit: int | None = None) -> list[dict]:
    """Rows ``{"id", "prompt"[, "answer"]}`` of a prompt file read by :func:`r1probe.data.prompts.read_prompt_file`
    (the first ``limit`` rows; ids default to the 0-based row number)."""
    from r1probe.data.prompts import read_prompt_file

    out = []
    for i, r in enumerate(read_prompt_file(path, limit=limit)):
        row = {"id": str(i) if r.id is None else r.id, "prompt": r.text.strip()}
        if r.answer is not None:
            row["answer"] = r.answer
        out.append(row)
    return out


def file_fit_data(lm, harmful: str | os.PathLike, benign, benign_limit: int = 150,
                  answer_tokens: int = 96) -> FitData:
    """Harmful prompts of one file vs benign token lists of files: the first ``benign_limit`` prompts of each,
    chat-formatted, followed by their answer (cut at ``answer_tokens`` tokens) when the row has one."""
    from r1probe.data.partitions import merge_reads, prompt_reads

    rows = read_prompts(harmful)
    harm = [r["prompt"] for r in rows]
    read_ids = prompt_reads(harmful, [r["id"] for r in rows])
    texts = []
    for f in benign:
        brows = read_prompts(f, benign_limit)
        read_ids = merge_reads(read_ids, prompt_reads(f, [r["id"] for r in brows]))
        for r in brows:
            ids = lm.chat.encode(lm.chat.format(r["prompt"]))
            if r.get("answer"):
                ids = ids + lm.tokenizer(r["answer"], add_special_tokens=False)["input_ids"][:answer_tokens]
            texts.append(ids)
    desc = f"harmful: {harmful}; benign: {', '.join(map(str, benign))} (first {benign_limit} each)"
    return FitData(harm, texts, desc, read_ids)
