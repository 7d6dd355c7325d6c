"""Dev and report partitions of every evaluation set, fixed by rule, and the tuning-read records.

Every set has a ``dev`` part (what tuning, screening, selection and search may read) and a ``report``
part (what reported numbers are computed on). The parts are a pure function of the set's name, the
item's upstream id and (for the built-in prompt sets) the configured seed; never of file order.

Rules, per set (:data:`SETS`; ids are the benchmark ids ``<bench>/<upstream id>``):

- ``chisafety-refusal``, ``chisafety-multiturn``: **report only** (no dev part: no tuning step ever
  reads a CHiSafetyBench item).
- ``gsm8k``: the upstream split: ``train.jsonl`` is dev (ids ``gsm8k-train/<row>``), ``test.jsonl`` is
  report (ids ``gsm8k/<row>``; the ``gsm8k-nll`` bench reads the same items).
- ``zh-harmful``, ``zh-harmless`` (built-in prompt sets): their ``train`` and ``val`` splits of the
  configured seed are dev (tuning data), their ``test`` split is report
  (:func:`r1probe.data.prompts.split_of`: ``sha256(f"{seed}:{text}")``).
- ``cvalues``: dev = the ``contrast`` and ``search`` parts of :func:`r1probe.data.borderline.borderline_splits`,
  report = its ``report`` part (the ``cvalues-report`` bench).
- ``or-bench`` (OR-Bench-Hard): the carrier's train and val files are dev; its test file (the bench) is
  cut by the hash rule.
- ``xstest-safe``, ``multijail``, ``polyrefuse``, ``cmath``, ``math500``, ``safetybench-zh``: the hash rule.

**The hash rule.** An item is ``dev`` when ``int(sha256(f"{SALT}:{set}:{upstream_id}")[:16], 16) / 2**64 <
dev_fraction`` (the first 16 hex digits of the digest as a fraction of 2**64), else ``report``, with
``SALT = "r1probe-partition-v1"`` and the fractions of :data:`DEV_FRACTIONS`: xstest-safe 0.4, or-bench 0.4,
multijail 0.5, polyrefuse 0.5, cmath 0.25, math500 0.2, safetybench-zh 0.2.

**Tuning-read records.** Every tuning path writes ``tuning_reads.json`` (``{set: [ids]}``,
:func:`write_tuning_reads`) beside its output, naming every item it read; a report checks its items
against such records with :func:`overlap` and prints :func:`overlap_line`.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

from r1probe.errors import DataError, R1ProbeError

SALT = "r1probe-partition-v1"
PARTS = ("dev", "report")
#: dev fraction of each hash-rule set
DEV_FRACTIONS: dict[str, float] = {"xstest-safe": 0.4, "or-bench": 0.4, "multijail": 0.5, "polyrefuse": 0.5,
                                   "cmath": 0.25, "math500": 0.2, "safetybench-zh": 0.2}
#: the file name of a tuning-read record
TUNING_READS = "tuning_reads.json"


def hash_unit(set_name: str, upstream_id: str, salt: str = SALT) -> float:
    """``int(sha256(f"{salt}:{set_name}:{upstream_id}")[:16], 16) / 2**64`` in [0, 1)."""
    h = hashlib.sha256(f"{salt}:{set_name}:{upstream_id}".encode("utf-8")).hexdigest()
    return int(h[:16], 16) / 2 ** 64


def hash_part(set_name: str, upstream_id: str, dev_fraction: float) -> str:
    """``"dev"`` when :func:`hash_unit` is below ``dev_fraction``, else ``"report"``."""
    return "dev" if hash_unit(set_name, upstream_id) < dev_fraction else "report"


def upstream_id(item_id: str) -> str:
    """The upstream part of a benchmark id ``<bench>/<upstream id>`` (everything after the first ``/``)."""
    return str(item_id).split("/", 1)[1] if "/" in str(item_id) else str(item_id)


@dataclass(frozen=True)
class PartitionedSet:
    """One set: its parts, a one-line rule, and ``ids(root, seed) -> {part: [ids]}``."""

    name: str
    parts: tuple[str, ...]
    rule: str
    ids: Callable[[str | None, int], dict[str, list[str]]]


SETS: dict[str, PartitionedSet] = {}
#: benchmark name -> the set its items belong to
BENCH_SETS: dict[str, str] = {}


def register_set(ps: PartitionedSet, benches: Iterable[str] = ()) -> PartitionedSet:
    """Add ``ps`` to :data:`SETS`; ``benches`` whose items are items of this set."""
    SETS[ps.name] = ps
    for b in benches:
        BENCH_SETS[b] = ps.name
    _ids.cache_clear()
    return ps


def get_set(name: str) -> PartitionedSet:
    if name not in SETS:
        raise R1ProbeError(f"unknown partitioned set {name!r}; known: {', '.join(SETS)}")
    return SETS[name]


@lru_cache(maxsize=64)
def _ids(name: str, root: str | None, seed: int) -> dict[str, tuple[str, ...]]:
    got = get_set(name).ids(root, seed)
    return {p: tuple(got.get(p, ())) for p in get_set(name).parts}


def partition_ids(set_name: str, part: str, *, root: str | os.PathLike | None = None, seed: int = 0) -> list[str]:
    """The ids of part ``part`` (``dev`` or ``report``) of set ``set_name`` (a set without that part: an error)."""
    ps = get_set(set_name)
    if part not in ps.parts:
        raise R1ProbeError(f"{set_name} has no {part!r} part (parts: {', '.join(ps.parts)})")
    return list(_ids(set_name, None if root is None else str(root), int(seed))[part])


def part_of(set_name: str, item_id: str, *, root: str | os.PathLike | None = None, seed: int = 0) -> str | None:
    """The part holding ``item_id`` in ``set_name`` (None: not an item of the set)."""
    ps = get_set(set_name)
    if set_name in DEV_FRACTIONS and not (set_name == "or-bench" and not str(item_id).startswith("or-bench/test/")):
        return hash_part(set_name, upstream_id(item_id), DEV_FRACTIONS[set_name])
    ids = _ids(set_name, None if root is None else str(root), int(seed))
    for p in ps.parts:
        if item_id in ids[p]:
            return p
    return None


def canonical(bench: str, item_id: str) -> tuple[str, str] | None:
    """``(set, id)`` of a benchmark item (None when the bench belongs to no set)."""
    s = BENCH_SETS.get(bench)
    if s is None:
        return None
    if bench == "gsm8k-nll":
        item_id = "gsm8k/" + upstream_id(item_id)
    return s, str(item_id)


def filter_items(bench: str, items: Sequence, split: str | None, *, root: str | os.PathLike | None = None,
                 seed: int = 0) -> list:
    """The items of ``bench`` in part ``split`` (``dev``, ``report``; ``all`` or None: every item).
    A bench outside every set keeps all its items."""
    if split in (None, "all"):
        return list(items)
    if split not in PARTS:
        raise R1ProbeError(f"split {split!r}: choose report, dev or all")
    if bench not in BENCH_SETS:
        return list(items)
    set_name = BENCH_SETS[bench]
    if split not in get_set(set_name).parts:
        return []
    return [it for it in items if part_of(set_name, canonical(bench, it.id)[1], root=root, seed=seed) == split]


# --- the registered sets ---------------------------------------------------------------------------------

def _hash_set(name: str, load: Callable[[str | None], list[str]]) -> PartitionedSet:
    f = DEV_FRACTIONS[name]

    def ids(root, seed):
        out = {"dev": [], "report": []}
        for i in load(root):
            out[hash_part(name, upstream_id(i), f)].append(i)
        return out
    return PartitionedSet(name, PARTS, f"hash rule, dev fraction {f}", ids)


def _chisafety(part: str):
    def ids(root, seed):
        from r1probe.data import chisafety as cs

        csroot = Path(root) / "chisafetybench" if root is not None else None
        fn = cs.load_chisafety_refusal if part == "refusal" else cs.load_chisafety_multiturn
        return {"report": [p.id for p in fn(csroot)]}
    return ids


def _gsm8k(root, seed):
    from r1probe.data import benchmarks as B

    return {"dev": [f"gsm8k-train/{upstream_id(it.id)}" for it in B.load_gsm8k(root, "train")],
            "report": [it.id for it in B.load_gsm8k(root, "test")]}


def _builtin(name: str):
    def ids(root, seed):
        from r1probe.data.prompts import load_prompt_set

        ps = load_prompt_set(f"builtin:{name}")
        return {"dev": [f"{name}/{p.id}" for s in ("train", "val") for p in ps.split(s, seed=seed).prompts],
                "report": [f"{name}/{p.id}" for p in ps.split("test", seed=seed).prompts]}
    return ids


def _cvalues(root, seed):
    from r1probe.data.borderline import borderline_splits

    b = borderline_splits(root, english_contrast=False)
    dev = [it.id for it in b["contrast"] + b["search"]]
    rep = [it.id for it in b["report"]]
    return {"dev": dev, "report": rep}


def _or_bench(root, seed):
    from r1probe.data import benchmarks as B

    out = {"dev": [], "report": []}
    for split in ("train", "val"):
        try:
            out["dev"] += [it.id for it in B.load_or_bench(root, split)]
        except DataError:
            pass
    for it in B.load_or_bench(root, "test"):
        out[hash_part("or-bench", upstream_id(it.id), DEV_FRACTIONS["or-bench"])].append(it.id)
    return out


def _multijail(root):
    import csv

    from r1probe.data.benchmarks import data_root

    p = data_root(root) / "multijail" / "MultiJail.csv"
    if not p.exists():
        raise DataError(f"MultiJail file not found: {p}")
    with open(p, encoding="utf-8-sig", newline="") as f:
        return [f"multijail/{r['id']}" for r in csv.DictReader(f)]


def _polyrefuse(root):
    from r1probe.data.benchmarks import data_root

    out = []
    for p in sorted((data_root(root) / "polyrefuse_zh").glob("*_translated_zh.json")):
        name = p.name[: -len("_translated_zh.json")]
        out += [f"polyrefuse-zh/{name}/{i}" for i in range(len(json.loads(p.read_text("utf-8"))))]
    return out


def _bench_ids(loader_name: str):
    def load(root):
        from r1probe.data import benchmarks as B

        return [it.id for it in getattr(B, loader_name)(root)]
    return load


def _register_builtin() -> None:
    register_set(PartitionedSet("chisafety-refusal", ("report",), "report only", _chisafety("refusal")),
                 ("chisafety-refusal",))
    register_set(PartitionedSet("chisafety-multiturn", ("report",), "report only", _chisafety("multiturn")),
                 ("chisafety-multiturn",))
    register_set(PartitionedSet("gsm8k", PARTS, "upstream split: train = dev, test = report", _gsm8k),
                 ("gsm8k", "gsm8k-nll"))
    for name in ("zh-harmful", "zh-harmless"):
        register_set(PartitionedSet(name, PARTS, "built-in split of the seed: train+val = dev, test = report",
                                    _builtin(name)), (name,) if name == "zh-harmless" else ())
    register_set(PartitionedSet("cvalues", PARTS, "borderline splits: contrast+search = dev, report = report",
                                _cvalues), ("cvalues", "cvalues-report"))
    register_set(PartitionedSet("or-bench", PARTS, "train+val files = dev; test file by the hash rule "
                                f"(dev fraction {DEV_FRACTIONS['or-bench']})", _or_bench), ("or-bench",))
    register_set(_hash_set("xstest-safe", lambda root: _bench_ids("load_xstest")(root)), ("xstest-safe",))
    register_set(_hash_set("multijail", _multijail))
    register_set(_hash_set("polyrefuse", _polyrefuse), ("polyrefuse-test",))
    register_set(_hash_set("cmath", _bench_ids("load_cmath")), ("cmath",))
    register_set(_hash_set("math500", _bench_ids("load_math500")), ("math500",))
    register_set(_hash_set("safetybench-zh", _bench_ids("load_safetybench_zh")),
                 ("safetybench-zh", "safetybench-zh-gen"))


_register_builtin()


# --- tuning-read records -----------------------------------------------------------------------------------

def set_of_id(item_id: str) -> str:
    """The set a canonical id belongs to, from its prefix (``gsm8k-train/3`` -> ``gsm8k``; unknown prefixes
    name themselves)."""
    head = str(item_id).split("/", 1)[0]
    if head in ("gsm8k-train", "gsm8k-nll"):
        return "gsm8k"
    if head == "xstest":
        return "xstest-safe"
    if head == "polyrefuse-zh":
        return "polyrefuse"
    return BENCH_SETS.get(head, head)


def spec_set(spec: str | os.PathLike) -> str:
    """The set name of a prompt-set spec: ``builtin:zh-harmful:val`` -> ``zh-harmful``; a file -> its stem."""
    s = str(spec).split("[", 1)[0]
    for tail in (":train", ":val", ":test"):
        if s.endswith(tail):
            s = s[: -len(tail)]
    if s.startswith("builtin:"):
        return s.split(":", 2)[1]
    return Path(s).stem


def prompt_reads(spec: str | os.PathLike, ids: Iterable[str]) -> dict[str, list[str]]:
    """``{set: ["<set>/<prompt id>", ...]}`` for prompts of the prompt set ``spec`` (ids as the loader gives them)."""
    name = spec_set(spec)
    return {name: sorted({f"{name}/{i}" for i in ids})}


def reads_of(ids: Iterable[str]) -> dict[str, list[str]]:
    """``{set: [ids]}`` of canonical ids (sorted, unique)."""
    out: dict[str, set] = {}
    for i in ids:
        out.setdefault(set_of_id(i), set()).add(str(i))
    return {k: sorted(v) for k, v in sorted(out.items())}


def merge_reads(*records: Mapping[str, Iterable[str]]) -> dict[str, list[str]]:
    """The union of several ``{set: [ids]}`` records."""
    out: dict[str, set] = {}
    for r in records:
        for k, v in (r or {}).items():
            out.setdefault(k, set()).update(map(str, v))
    return {k: sorted(v) for k, v in sorted(out.items())}


def write_tuning_reads(folder: str | os.PathLike, reads: Mapping[str, Iterable[str]]) -> Path:
    """Write ``folder/tuning_reads.json`` (``{set: [ids]}``) and return its path."""
    from r1probe.provenance import atomic_write_json

    p = Path(folder) / TUNING_READS
    p.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(p, merge_reads(reads))
    return p


def load_tuning_reads(path: str | os.PathLike) -> dict[str, list[str]]:
    """A tuning-read record: ``path`` is the JSON file or a folder holding ``tuning_reads.json``."""
    p = Path(path)
    if p.is_dir():
        p = p / TUNING_READS
    try:
        data = json.loads(p.read_text("utf-8"))
    except FileNotFoundError:
        raise DataError(f"{p}: no tuning-read record") from None
    except json.JSONDecodeError as e:
        raise DataError(f"{p}: not valid JSON ({e.msg})") from None
    if not isinstance(data, dict) or not all(isinstance(v, list) for v in data.values()):
        raise DataError(f"{p}: expected {{set: [ids]}}")
    return merge_reads(data)


def overlap(reads: Mapping[str, Iterable[str]], reported: Mapping[str, Iterable[str]]) -> list[str]:
    """The reported items that a tuning step read: ``reported`` is ``{bench: [item ids]}``; returns the
    overlapping canonical ids (sorted)."""
    read = {k: set(map(str, v)) for k, v in reads.items()}
    bad = set()
    for bench, ids in reported.items():
        for i in ids:
            c = canonical(bench, i)
            s, cid = c if c is not None else (set_of_id(i), str(i))
            if cid in read.get(s, ()):
                bad.add(cid)
    return sorted(bad)


def overlap_line(items: Sequence[str]) -> str:
    """``tuning/report overlap: N items`` (naming up to ten of them when N > 0)."""
    if not items:
        return "tuning/report overlap: 0 items"
    shown = ", ".join(items[:10]) + (f", ... ({len(items) - 10} more)" if len(items) > 10 else "")
    return f"tuning/report overlap: {len(items)} items ({shown})"


class TuningOverlapError(R1ProbeError):
    """Reported items were read by a tuning step."""


def check_overlap(reads: Mapping[str, Iterable[str]], reported: Mapping[str, Iterable[str]]) -> str:
    """:func:`overlap_line` when nothing overlaps; raise :class:`TuningOverlapError` naming the items otherwise."""
    bad = overlap(reads, reported)
    if bad:
        raise TuningOverlapError(overlap_line(bad) + ": a tuning step read reported items")
    return overlap_line(bad)


__all__ = ["SALT", "PARTS", "DEV_FRACTIONS", "TUNING_READS", "SETS", "BENCH_SETS", "PartitionedSet", "register_set",
           "get_set", "hash_unit", "hash_part", "partition_ids", "part_of", "canonical", "filter_items", "reads_of",
           "merge_reads", "write_tuning_reads", "load_tuning_reads", "overlap", "overlap_line", "check_overlap",
           "TuningOverlapError", "set_of_id", "spec_set", "prompt_reads"]
