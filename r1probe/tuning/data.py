"""The prompt splits of the edit search: what the directions are fitted on, what the search measures
and what the report measures, disjoint by construction (``r1probe.data.borderline``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from r1probe.tuning.settings import EditSearchSettings


@dataclass
class SearchData:
    """Every prompt list the search and the report use, with the split of each (no leakage by construction).

    ``*_train`` / ``border_contrast``: the directions; ``*_search``: the objectives of every trial;
    ``*_report``: only the chosen edit and the run-time plans, after the search.
    """

    harmful_train: list
    harmless_train: list
    border_contrast: list
    harmful_search: list
    border_search: list
    nll_search: list
    harmful_report: list
    border_report: list
    nll_report: list

    def search_ids(self) -> set[str]:
        return {it.id for it in self.harmful_search + self.border_search + self.nll_search}

    def report_ids(self) -> set[str]:
        return {it.id for it in self.harmful_report + self.border_report + self.nll_report}

    def check(self) -> None:
        """Raise ``DataError`` when a search prompt is also a report or contrast prompt."""
        from r1probe.data.borderline import check_disjoint

        check_disjoint({"search": self.harmful_search + self.border_search + self.nll_search,
                        "report": self.harmful_report + self.border_report + self.nll_report})
        check_disjoint({"search": self.border_search, "contrast": self.border_contrast})

    def summary(self) -> dict:
        return {k: len(v) for k, v in asdict(self).items()}

    def tuning_reads(self) -> dict[str, list[str]]:
        """``{set: [ids]}`` of every item the directions and the search read (``r1probe.data.partitions``)."""
        from r1probe.data.partitions import reads_of

        return reads_of(it.id for it in self.harmful_train + self.harmless_train + self.border_contrast
                        + self.harmful_search + self.border_search + self.nll_search)


def _harmless_dev(n: int) -> list:
    """The built-in zh-harmless dev part (train + val splits, seed 0) in hash order: the BELLE questions that
    are never in the zh-harmless report (test) split."""
    from r1probe.data import borderline as BL
    from r1probe.data.prompts import load_prompt_set

    ps = load_prompt_set("builtin:zh-harmless")
    items = [BL.Item(id=f"zh-harmless/{p.id}", text=p.text, source="zh-harmless", category=p.category or "")
             for split in ("train", "val") for p in ps.split(split, seed=0).prompts]
    return BL.hash_order(items)[:n]


def load_search_data(settings: EditSearchSettings, root=None, chisafety_root=None) -> SearchData:
    """The splits of ``r1probe.data.borderline`` cut to the sizes of ``settings``; every tuning list is dev
    data (``r1probe.data.partitions``): the harmful objective is PolyRefuse-zh val only (CHiSafetyBench is
    report-only), the harmless direction prompts the zh-harmless dev part."""
    from r1probe.data import borderline as BL

    s = settings
    b = BL.borderline_splits(root)
    h = BL.harmful_splits(root, chisafety_root)
    g = BL.gsm8k_splits(root)
    harmful_search = h["val"][:s.n_harmful]
    from r1probe.data.partitions import part_of

    dev = [it for it in b["contrast"] if it.source != "xstest-safe" or part_of("xstest-safe", it.id, root=root) == "dev"]
    contrast = BL.hash_order(dev)[:s.n_direction]
    d = SearchData(harmful_train=h["train"][:s.n_direction], harmless_train=_harmless_dev(s.n_direction),
                   border_contrast=contrast, harmful_search=harmful_search,
                   border_search=b["search"][:s.n_borderline], nll_search=g["search"][:s.n_nll],
                   harmful_report=h["report"][:s.report_harmful], border_report=b["report"][:s.report_borderline],
                   nll_report=g["report"][:s.report_nll])
    d.check()
    return d


__all__ = ["SearchData", "load_search_data"]
