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

``extra_benign=[bench, ...]`` adds the whole *dev* part of benches whose prompts look harmful and are not
(``xstest-safe``, ``or-bench``; :data:`EXTRA_BENIGN`), as AlphaSteer's null space can.

``fit_seed=K`` keeps a seeded share (``fit_fraction``) of every part (harmful prompts, harmless prompts,
GSM8K texts, borderline prompts), chosen by :func:`subsample` from the same splits: refits on such
subsamples measure how much the edit's results vary with its fit data, without moving any item across
the dev/report partition (a different split seed would).

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
                     seed: int = 0, borderline: int = 0, fit_seed: int | None = None,
                     fit_fraction: float = 0.8, extra_benign=()) -> FitData:
    """Harmful train prompts vs benign token lists (harmless train prompts + GSM8K train 1..n_gsm
    [+ ``borderline`` CValues contrast prompts] [+ the dev parts of the ``extra_benign`` benches]); with
    ``fit_seed``, a seeded ``fit_fraction`` of each."""
    from r1probe.data.benchmarks import load_gsm8k
    from r1probe.data.prompts import load_prompt_set

    from r1probe.data.partitions import merge_reads, prompt_reads

    keep = seeded_keep(fit_seed, fit_fraction)
    harm_ps = keep(load_prompt_set(harmful, split="train", seed=seed).prompts, lambda p: p.id)
    safe_ps = keep(load_prompt_set(harmless, split="train", seed=seed).prompts, lambda p: p.id)
    harm = [p.text for p in harm_ps]
    benign = [lm.chat.encode(lm.chat.format(p.text)) for p in safe_ps]
    n_safe = len(benign)
    gsm = keep(load_gsm8k(data_root, "train")[:n_gsm] if n_gsm else [], lambda it: it.id)
    read_ids = merge_reads(prompt_reads(harmful, [p.id for p in harm_ps]),
                           prompt_reads(harmless, [p.id for p in safe_ps]),
                           {"gsm8k": [f"gsm8k-train/{it.id.split('/')[-1]}" for it in gsm]})
    for it in gsm:
        ids = lm.chat.encode(lm.chat.format(it.meta["question"]))
        benign.append(ids + lm.tokenizer(it.solution, add_special_tokens=False)["input_ids"][:gsm_tokens])
    desc = (f"harmful: {harmful} train split (seed {seed}, {len(harm)}); benign: {harmless} train prompts "
            f"({n_safe}) + GSM8K train {'1-' if fit_seed is None else f'{len(gsm)} of 1-'}{len(gsm) if fit_seed is None else n_gsm} "
            f"(question + solution, <= {gsm_tokens} tokens)")
    if borderline:
        from r1probe.data.borderline import borderline_splits

        border = keep(borderline_splits(data_root, english_contrast=False)["contrast"][:borderline], lambda it: it.id)
        benign += [lm.chat.encode(lm.chat.format(it.text)) for it in border]
        desc += (f" + CValues borderline contrast split 1-{len(border)} (prompts)" if fit_seed is None else
                 f" + CValues borderline contrast split {len(border)} of 1-{borderline} (prompts)")
        read_ids = merge_reads(read_ids, {"cvalues": [it.id for it in border]})
    if extra_benign:
        texts, extra_ids = extra_benign_prompts(extra_benign, data_root, seed, keep=keep)
        benign += [lm.chat.encode(lm.chat.format(t)) for t in texts]
        desc += f" + the dev parts of {', '.join(extra_benign)} ({len(texts)} prompts)"
        read_ids = merge_reads(read_ids, extra_ids)
    if fit_seed is not None:
        desc += f"; fit subsample: {fit_fraction:g} of each part, seed {fit_seed}"
    return FitData(harm, benign, desc, read_ids)


def _xstest_safe(root):
    from r1probe.data.benchmarks import load_xstest

    return load_xstest(root, "safe")


def _or_bench(root):
    from r1probe.data.benchmarks import load_or_bench

    return load_or_bench(root)


#: benches whose dev part may join a fit's benign side (prompts that look harmful and are not)
EXTRA_BENIGN = {"xstest-safe": _xstest_safe, "or-bench": _or_bench}


def extra_benign_prompts(names, data_root=None, seed: int = 0, *, keep=None) -> tuple[list[str], dict]:
    """The prompt texts of the whole *dev* part of each bench in ``names`` (:data:`EXTRA_BENIGN`; never a report
    item) and the ids read, ``{set: [ids]}``. ``keep(items, key)``: a subsample of each bench's items."""
    from r1probe.data.partitions import canonical, filter_items, merge_reads, reads_of
    from r1probe.errors import R1ProbeError

    texts, reads = [], {}
    for b in names:
        if b not in EXTRA_BENIGN:
            raise R1ProbeError(f"extra benign set {b!r}: choose from {', '.join(EXTRA_BENIGN)} (their dev parts)")
        items = filter_items(b, EXTRA_BENIGN[b](data_root), "dev", root=data_root, seed=seed)
        if keep is not None:
            items = keep(items, lambda it: it.id)
        texts += [it.text for it in items]
        reads = merge_reads(reads, reads_of((canonical(b, it.id) or (None, it.id))[1] for it in items))
    return texts, reads


def seeded_keep(fit_seed: int | None, fraction: float):
    """``keep(items, key)``: all of ``items`` when ``fit_seed`` is None, else their :func:`subsample`."""
    def keep(items, key):
        return items if fit_seed is None else subsample(items, key, fraction, fit_seed)
    return keep


def subsample(items: list, key, fraction: float, seed: int) -> list:
    """The items whose ``u = sha256(f"fit:{seed}:{key(item)}") / 2**64`` is below ``fraction``, in their order.

    A pure function of (seed, id): the same seed keeps the same items whatever else the list holds.
    """
    import hashlib

    if not 0 < fraction <= 1:
        raise ValueError(f"fit fraction {fraction} must be in (0, 1]")

    def u(x) -> float:
        return int.from_bytes(hashlib.sha256(f"fit:{seed}:{key(x)}".encode("utf-8")).digest()[:8], "big") / 2 ** 64

    return [x for x in items if u(x) < fraction]


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
