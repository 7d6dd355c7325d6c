"""Prompt sets: JSON / JSONL / CSV loaders, the vendored Chinese built-ins, seeded splits.

A :class:`PromptSet` is an ordered list of :class:`Prompt` rows (id, text, label, category,
optional chat history) plus the sha256 of its content, so every artifact can name exactly
which prompts made it.

Specs understood by :func:`load_prompt_set`:

* ``builtin:zh-harmful``: 614 harmful Chinese prompts (PolyRefuse zh train+val, MultiJail zh);
* ``builtin:zh-harmless``: 1,000 ordinary Chinese instructions (BELLE eval);
* a ``.json`` (list of objects or strings, or an object holding one such list), ``.jsonl`` or
  ``.csv`` file. The text column is ``field`` or the first of :data:`TEXT_FIELDS` present.

Any spec may end in ``:train``, ``:val`` or ``:test`` to pick a split (same as ``split=``).
Splits are a deterministic function of (seed, text): a prompt lands in the same split on every
machine and in every run, duplicated texts land together, and the three splits never overlap.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from collections import Counter
from dataclasses import dataclass, field as dc_field
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

from r1probe.errors import DataError
from r1probe.provenance import sha256_json

#: text columns guessed in this order when ``field`` is not given
TEXT_FIELDS = ("instruction", "prompt", "question", "input", "text", "query", "content")
ID_FIELDS = ("id", "idx", "uid", "index")
CATEGORY_FIELDS = ("category", "class", "sub_category", "tags", "type")
LABEL_FIELDS = ("label",)
SPLITS = ("train", "val", "test")
#: fractions of (train, val, test)
SPLIT_FRACTIONS = (0.6, 0.2, 0.2)

BUILTIN_SETS = {
    "zh-harmful": ("zh_harmful.jsonl", "harmful",
                   "PolyRefuse zh harmful train+val (Apache-2.0) + MultiJail zh (MIT), 614 prompts"),
    "zh-harmless": ("zh_harmless.jsonl", "harmless", "BELLE eval questions (ODC-By-1.0), 1,000 prompts"),
}


@dataclass
class Prompt:
    """One prompt: ``text`` is the (last) user message, ``history`` earlier chat messages if any."""

    id: str
    text: str
    label: str
    category: str | None = None
    history: list | None = None

    def to_dict(self) -> dict:
        d = {"id": self.id, "text": self.text, "label": self.label, "category": self.category}
        if self.history:
            d["history"] = self.history
        return d


def prompts_sha256(prompts: Iterable[Prompt]) -> str:
    """sha256 of the canonical JSON of the prompts' (id, text, label, category, history)."""
    return sha256_json([[p.id, p.text, p.label, p.category, p.history or None] for p in prompts])


@dataclass
class PromptSet:
    """A named, ordered list of prompts and the sha256 of their content."""

    name: str
    prompts: list[Prompt]
    sha256: str = ""
    meta: dict = dc_field(default_factory=dict)

    def __post_init__(self):
        self.prompts = list(self.prompts)
        if not self.sha256:
            self.sha256 = prompts_sha256(self.prompts)

    def __len__(self) -> int:
        return len(self.prompts)

    def __iter__(self) -> Iterator[Prompt]:
        return iter(self.prompts)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return PromptSet(f"{self.name}[{i.start or 0}:{'' if i.stop is None else i.stop}]", self.prompts[i])
        return self.prompts[i]

    @property
    def texts(self) -> list[str]:
        return [p.text for p in self.prompts]

    @property
    def ids(self) -> list[str]:
        return [p.id for p in self.prompts]

    @property
    def labels(self) -> list[str]:
        return [p.label for p in self.prompts]

    def label_counts(self) -> dict[str, int]:
        return dict(Counter(self.labels))

    def with_label(self, label: str) -> "PromptSet":
        """The same prompts relabelled ``label``."""
        return PromptSet(self.name, [Prompt(p.id, p.text, label, p.category, p.history) for p in self.prompts],
                         meta=dict(self.meta))

    def split(self, which: str, seed: int = 0, fractions: Sequence[float] = SPLIT_FRACTIONS) -> "PromptSet":
        """The ``train``/``val``/``test`` part (see :func:`split_of`), in original order."""
        if which not in SPLITS:
            raise DataError(f"split {which!r}: choose one of {', '.join(SPLITS)}")
        keep = [p for p in self.prompts if split_of(p.text, seed, fractions) == which]
        return PromptSet(f"{self.name}:{which}", keep, meta={**self.meta, "split": which, "seed": seed})

    def sample(self, n: int, seed: int = 0) -> "PromptSet":
        """``n`` prompts chosen by a seeded hash order (deterministic, order kept)."""
        if n >= len(self):
            return self
        chosen = set(sorted(range(len(self)), key=lambda i: _h(f"sample:{seed}:{self.prompts[i].text}"))[:n])
        return PromptSet(f"{self.name}[n={n},seed={seed}]", [p for i, p in enumerate(self.prompts) if i in chosen],
                         meta=dict(self.meta))

    def take(self, n: int) -> "PromptSet":
        return self if n >= len(self) else PromptSet(f"{self.name}[:{n}]", self.prompts[:n], meta=dict(self.meta))

    @staticmethod
    def concat(sets: Sequence["PromptSet"], name: str | None = None) -> "PromptSet":
        return PromptSet(name or "+".join(s.name for s in sets), [p for s in sets for p in s.prompts])

    def describe(self) -> dict:
        return {"name": self.name, "n": len(self), "sha256": self.sha256, "label_counts": self.label_counts(),
                **({"meta": self.meta} if self.meta else {})}


def _h(s: str) -> int:
    return int.from_bytes(hashlib.sha256(s.encode("utf-8")).digest()[:8], "big")


def split_of(text: str, seed: int = 0, fractions: Sequence[float] = SPLIT_FRACTIONS) -> str:
    """The split a prompt belongs to: u = sha256(f"{seed}:{text}") / 2**64 against cumulative fractions.

    A pure function of (seed, text): stable across runs, machines and file order; duplicates share a split.
    """
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-9:
        raise DataError(f"split fractions {tuple(fractions)} must be three non-negative numbers summing to 1")
    u = _h(f"{seed}:{text}") / 2 ** 64
    if u < fractions[0]:
        return "train"
    if u < fractions[0] + fractions[1]:
        return "val"
    return "test"


# ----------------------------------------------------------------------------- file parsing

def _line_of(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


def _json_items(text: str, path: str) -> list[tuple[int, Any]]:
    """Items of a JSON file with the line each starts on: a top-level list, or an object holding one list."""
    dec = json.JSONDecoder()
    s = text.lstrip("\ufeff")
    try:
        i = len(s) - len(s.lstrip())
        if s[i:i + 1] == "[":
            items, i = [], i + 1
            while True:
                while i < len(s) and s[i] in " \t\r\n":
                    i += 1
                if i < len(s) and s[i] == "]" and not items:
                    i += 1
                    break
                obj, end = dec.raw_decode(s, i)
                items.append((_line_of(s, i), obj))
                i = end
                while i < len(s) and s[i] in " \t\r\n":
                    i += 1
                if i < len(s) and s[i] == ",":
                    i += 1
                    continue
                if i < len(s) and s[i] == "]":
                    i += 1
                    break
                raise json.JSONDecodeError("expected ',' or ']'", s, i)
            if s[i:].strip():
                raise json.JSONDecodeError("extra data after the list", s, i)
            return items
        obj = json.loads(s)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: line {e.lineno}: invalid JSON ({e.msg})") from None
    if isinstance(obj, dict):
        lists = [(k, v) for k, v in obj.items() if isinstance(v, list)]
        if len(lists) == 1:
            k, v = lists[0]
            return [(0, x) for x in v]
        raise DataError(f"{path}: line 1: expected a list of prompts (or an object holding exactly one list), "
                        f"got an object with keys {list(obj)[:5]}")
    raise DataError(f"{path}: line 1: expected a list of prompts, got {type(obj).__name__}")


def _jsonl_items(text: str, path: str) -> list[tuple[int, Any]]:
    items = []
    for n, line in enumerate(text.lstrip("\ufeff").splitlines(), 1):
        if not line.strip():
            continue
        try:
            items.append((n, json.loads(line)))
        except json.JSONDecodeError as e:
            raise DataError(f"{path}: line {n}: invalid JSON ({e.msg})") from None
    return items


def _looks_like_jsonl(text: str) -> bool:
    first = next((ln for ln in text.lstrip("\ufeff").splitlines() if ln.strip()), "")
    try:
        return isinstance(json.loads(first), dict)
    except json.JSONDecodeError:
        return False


def _csv_items(text: str, path: str) -> list[tuple[int, Any]]:
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff"), newline=""), strict=True)
    items = []
    try:
        if not reader.fieldnames:
            return []
        ncol = len(reader.fieldnames)
        for row in reader:
            if None in row or any(v is None for v in row.values()):
                raise DataError(f"{path}: line {reader.line_num}: expected {ncol} columns "
                                f"({', '.join(reader.fieldnames)}), got {ncol + len(row.get(None) or []) if None in row else 'fewer'}")
            items.append((reader.line_num, row))
    except csv.Error as e:
        raise DataError(f"{path}: line {reader.line_num}: malformed CSV ({e})") from None
    return items


def _pick(row: dict, names: Sequence[str]) -> Any:
    for n in names:
        if n in row and row[n] not in (None, ""):
            return row[n]
    return None


def _category(v: Any) -> str | None:
    if v is None:
        return None
    if isinstance(v, list):
        return "; ".join(map(str, v)) or None
    return str(v)


def parse_rows(items: list[tuple[int, Any]], path: str, *, field: str | None, label: str | None,
               stem: str) -> list[Prompt]:
    """Turn parsed rows into prompts, with one-line errors naming the file and line."""
    prompts, seen = [], {}
    for k, (line, row) in enumerate(items):
        where = f"{path}: line {line}" if line else f"{path}: item {k}"
        if isinstance(row, str):
            row = {"text": row}
        if not isinstance(row, dict):
            raise DataError(f"{where}: expected an object or a string, got {type(row).__name__}")
        if field is not None:
            if field not in row:
                raise DataError(f"{where}: no field {field!r} (fields: {', '.join(map(str, row))})")
            text = row[field]
        else:
            key = next((f for f in TEXT_FIELDS if f in row), None)
            if key is None:
                raise DataError(f"{where}: no text field; pass --field (looked for {', '.join(TEXT_FIELDS)}; "
                                f"found {', '.join(map(str, row)) or 'nothing'})")
            text = row[key]
        if not isinstance(text, str):
            raise DataError(f"{where}: text is {type(text).__name__}, expected a string")
        if not text.strip():
            raise DataError(f"{where}: empty prompt text")
        pid = _pick(row, ID_FIELDS)
        pid = f"{stem}-{k:05d}" if pid is None else str(pid)
        if pid in seen:
            raise DataError(f"{where}: duplicate id {pid!r} (first at {seen[pid]})")
        seen[pid] = f"line {line}" if line else f"item {k}"
        lab = label if label is not None else _pick(row, LABEL_FIELDS)
        history = row.get("history") or None
        if history is not None and not isinstance(history, list):
            raise DataError(f"{where}: history must be a list of messages")
        prompts.append(Prompt(pid, text, str(lab) if lab is not None else "unlabeled",
                              _category(_pick(row, CATEGORY_FIELDS)), history))
    return prompts


def load_prompt_file(path: str | os.PathLike, *, field: str | None = None, label: str | None = None,
                     name: str | None = None) -> PromptSet:
    """Read a JSON / JSONL / CSV prompt file (format from the suffix; ``.json`` holding JSON Lines is accepted)."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: prompt file not found")
    if p.is_dir():
        raise DataError(f"{p}: is a folder, expected a .json, .jsonl or .csv prompt file")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{p}: line {_line_of(p.read_bytes().decode('utf-8', 'replace'), e.start)}: not UTF-8 text") from None
    suffix = p.suffix.lower()
    if suffix == ".jsonl":
        items = _jsonl_items(text, str(p))
    elif suffix == ".json":
        try:
            items = _json_items(text, str(p))
        except DataError:
            if not _looks_like_jsonl(text):
                raise
            items = _jsonl_items(text, str(p))  # JSON Lines in a .json file (e.g. BELLE's eval_set.json)
    elif suffix in (".csv", ".tsv"):
        items = _csv_items(text, str(p)) if suffix == ".csv" else _csv_items(text.replace("\t", ","), str(p))
    else:
        raise DataError(f"{p}: unknown prompt file type {suffix!r} (use .json, .jsonl or .csv)")
    prompts = parse_rows(items, str(p), field=field, label=label, stem=p.stem)
    return PromptSet(name or p.stem, prompts, meta={"source": str(p)})


def builtin_path(name: str) -> Path:
    if name not in BUILTIN_SETS:
        raise DataError(f"builtin:{name}: unknown prompt set (choose from {', '.join('builtin:' + n for n in BUILTIN_SETS)})")
    return Path(str(resources.files("r1probe.data").joinpath("builtin", BUILTIN_SETS[name][0])))


def load_builtin(name: str, *, label: str | None = None) -> PromptSet:
    file, default_label, desc = BUILTIN_SETS.get(name, (None, None, None))
    path = builtin_path(name)
    ps = load_prompt_file(path, label=label or default_label, name=f"builtin:{name}")
    ps.meta = {"source": f"builtin:{name}", "description": desc}
    return ps


def _split_suffix(spec: str) -> tuple[str, str | None]:
    for s in SPLITS:
        if spec.endswith(":" + s):
            base = spec[: -len(s) - 1]
            if base.startswith("builtin:") or os.path.exists(base) or not os.path.exists(spec):
                return base, s
    return spec, None


def load_prompt_set(spec: str | os.PathLike, *, field: str | None = None, label: str | None = None,
                    split: str | None = None, seed: int = 0, limit: int | None = None) -> PromptSet:
    """Load a prompt set from a file path or ``builtin:NAME`` (optionally ``...:train|val|test``).

    ``label`` overrides each row's ``label`` column (default: the row's, else the built-in's,
    else ``"unlabeled"``); ``split`` picks a seeded split; ``limit`` keeps a seeded sample of that
    many prompts (after splitting). Raises :class:`DataError` with one line on bad input,
    including an empty result.
    """
    spec = str(spec)
    spec, suffix_split = _split_suffix(spec)
    if split is not None and suffix_split is not None and split != suffix_split:
        raise DataError(f"{spec}: split {suffix_split!r} in the spec conflicts with split={split!r}")
    split = split or suffix_split
    if split is not None and split not in SPLITS:
        raise DataError(f"split {split!r}: choose one of {', '.join(SPLITS)} (or none)")
    if spec.startswith("builtin:"):
        ps = load_builtin(spec.split(":", 1)[1], label=label)
        if field is not None:
            raise DataError(f"{spec}: --field does not apply to built-in sets")
    else:
        ps = load_prompt_file(spec, field=field, label=label)
    if not len(ps):
        raise DataError(f"{spec}: the prompt set is empty")
    if split is not None:
        ps = ps.split(split, seed=seed)
        if not len(ps):
            raise DataError(f"{spec}: split {split!r} (seed {seed}) is empty")
    if limit is not None:
        if limit < 1:
            raise DataError(f"limit {limit}: must be at least 1")
        ps = ps.sample(limit, seed=seed)
    return ps
