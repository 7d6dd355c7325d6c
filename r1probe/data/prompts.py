"""Prompt sets: JSON / JSONL / CSV loaders, the vendored Chinese built-ins, seeded splits.

A :class:`PromptSet` is an ordered list of :class:`Prompt` rows (id, text, label, category,
optional chat history) plus the sha256 of its content, so every artifact can name exactly
which prompts made it.

Specs understood by :func:`load_prompt_set`:

* ``builtin:zh-harmful``: 614 harmful Chinese prompts (PolyRefuse zh train+val, MultiJail zh);
* ``builtin:zh-harmless``: 1,000 ordinary Chinese instructions (BELLE eval);
* a prompt file read by :func:`read_prompt_file` (JSON, JSON Lines, CSV/TSV or plain text).
  The text column is ``field`` or the first of :data:`TEXT_FIELDS` present.

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
TEXT_FIELDS = ("instruction", "prompt", "question", "input", "text", "query", "content", "goal")
#: answer columns, the first non-empty string is the row's answer
ANSWER_FIELDS = ("answer", "std_answer", "response", "output", "completion", "target")
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

@dataclass(frozen=True)
class PromptRow:
    """One row of a prompt file: the prompt text and what else the row says about it.

    ``line`` is the 1-based line the row starts on; ``id``, ``answer``, ``category``, ``label`` and
    ``history`` are ``None`` when the row does not give them.
    """

    text: str
    line: int
    id: str | None = None
    answer: str | None = None
    category: str | None = None
    label: str | None = None
    history: list | None = None


#: suffix -> format; a file without a suffix is sniffed (``[``/``{`` first: JSON or JSON Lines, else text)
FORMATS = {".json": "json", ".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".tsv": "tsv", ".txt": "text"}


def _line_of(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


def _skip_ws(s: str, i: int) -> int:
    while i < len(s) and s[i] in " \t\r\n":
        i += 1
    return i


def _scan_list(s: str, i: int) -> tuple[list[tuple[int, Any]], int]:
    """The items of the JSON list opening at ``s[i] == "["`` with the line each starts on, and the end."""
    dec = json.JSONDecoder()
    items, i = [], _skip_ws(s, i + 1)
    if s[i:i + 1] == "]":
        return items, i + 1
    while True:
        i = _skip_ws(s, i)
        obj, end = dec.raw_decode(s, i)
        items.append((_line_of(s, i), obj))
        i = _skip_ws(s, end)
        if s[i:i + 1] == ",":
            i += 1
            continue
        if s[i:i + 1] == "]":
            return items, i + 1
        raise json.JSONDecodeError("expected ',' or ']'", s, i)


def _scan_object(s: str, i: int) -> tuple[dict[str, tuple[int, Any]], int]:
    """The members of the JSON object opening at ``s[i] == "{"``: key -> (offset of the value, value)."""
    dec = json.JSONDecoder()
    members, i = {}, _skip_ws(s, i + 1)
    if s[i:i + 1] == "}":
        return members, i + 1
    while True:
        i = _skip_ws(s, i)
        if s[i:i + 1] != '"':
            raise json.JSONDecodeError("expected a quoted key", s, i)
        key, i = dec.raw_decode(s, i)
        i = _skip_ws(s, i)
        if s[i:i + 1] != ":":
            raise json.JSONDecodeError("expected ':'", s, i)
        i = _skip_ws(s, i + 1)
        value, end = dec.raw_decode(s, i)
        members[key] = (i, value)
        i = _skip_ws(s, end)
        if s[i:i + 1] == ",":
            i += 1
            continue
        if s[i:i + 1] == "}":
            return members, i + 1
        raise json.JSONDecodeError("expected ',' or '}'", s, i)


def _has_text(row: Any, field: str | None) -> bool:
    return isinstance(row, dict) and (field in row if field is not None else any(f in row for f in TEXT_FIELDS))


def _json_items(text: str, path: str, field: str | None = None) -> list[tuple[int, Any]]:
    """Items of a JSON file with the line each starts on: a top-level list, or an object holding one list
    (``prompts`` or ``data`` when it holds several). An object that is itself a prompt row is a one-row file."""
    s = text.lstrip("\ufeff")
    i = _skip_ws(s, 0)
    try:
        if s[i:i + 1] == "[":
            items, end = _scan_list(s, i)
        elif s[i:i + 1] == "{":
            members, end = _scan_object(s, i)
            obj = {k: v for k, (_, v) in members.items()}
            if _has_text(obj, field):
                items = [(_line_of(s, i), obj)]
            else:
                lists = [k for k, v in obj.items() if isinstance(v, list)]
                if len(lists) > 1:
                    lists = [k for k in ("prompts", "data") if k in lists][:1] or lists
                if len(lists) != 1:
                    raise DataError(f"{path}: line {_line_of(s, i)}: expected a list of prompts (or an object holding "
                                    f"exactly one list), got an object with keys {list(obj)[:5]}")
                items, _ = _scan_list(s, members[lists[0]][0])
        else:
            obj, end = json.JSONDecoder().raw_decode(s, i)
            raise DataError(f"{path}: line {_line_of(s, i)}: expected a list of prompts, got {type(obj).__name__}")
        rest = _skip_ws(s, end)
        if rest < len(s):
            raise json.JSONDecodeError("extra data after the JSON value", s, rest)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: line {e.lineno}: invalid JSON ({e.msg})") from None
    return items


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
    lines = [ln for ln in text.lstrip("\ufeff").splitlines() if ln.strip()]
    try:
        return len(lines) > 1 and isinstance(json.loads(lines[0]), dict)
    except json.JSONDecodeError:
        return False


def _csv_items(text: str, path: str, delimiter: str = ",") -> list[tuple[int, Any]]:
    """Rows of a CSV/TSV file with a header, each with the line it starts on (after the previous row ends)."""
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff"), newline=""), strict=True, delimiter=delimiter)
    items, start = [], 1
    try:
        if not reader.fieldnames:
            return []
        ncol = len(reader.fieldnames)
        start = reader.line_num + 1
        for row in reader:
            if None in row or any(v is None for v in row.values()):
                raise DataError(f"{path}: line {start}: expected {ncol} columns "
                                f"({', '.join(reader.fieldnames)}), got {ncol + len(row.get(None) or []) if None in row else 'fewer'}")
            items.append((start, row))
            start = reader.line_num + 1
    except csv.Error as e:
        raise DataError(f"{path}: line {start}: malformed CSV ({e})") from None
    return items


def _text_items(text: str) -> list[tuple[int, Any]]:
    return [(n, {"text": line.strip()}) for n, line in enumerate(text.lstrip("\ufeff").splitlines(), 1)
            if line.strip()]


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


def _row(line: int, row: Any, path: str, field: str | None) -> PromptRow:
    where = f"{path}: line {line}"
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
    lab = _pick(row, LABEL_FIELDS)
    answer = next((row[k] for k in ANSWER_FIELDS if isinstance(row.get(k), str) and row[k].strip()), None)
    history = row.get("history") or None
    if history is not None and not isinstance(history, list):
        raise DataError(f"{where}: history must be a list of messages")
    return PromptRow(text=text, line=line, id=None if pid is None else str(pid), answer=answer,
                     category=_category(_pick(row, CATEGORY_FIELDS)), label=None if lab is None else str(lab),
                     history=history)


def _read_text(p: Path) -> str:
    if not p.exists():
        raise DataError(f"{p}: prompt file not found")
    if p.is_dir():
        raise DataError(f"{p}: is a folder, expected a prompt file ({', '.join(FORMATS)})")
    data = p.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise DataError(f"{p}: line {line}: not UTF-8 text") from None


def _format_of(p: Path, text: str) -> str:
    suffix = p.suffix.lower()
    if suffix in FORMATS:
        return FORMATS[suffix]
    if suffix:
        raise DataError(f"{p}: unknown prompt file type {suffix!r} (use {', '.join(FORMATS)})")
    head = text.lstrip("\ufeff \t\r\n")[:1]
    return "json" if head in ("[", "{") else "text"


def read_prompt_file(path: str | os.PathLike, *, field: str | None = None,
                     limit: int | None = None) -> list[PromptRow]:
    """The rows of a prompt file: the one reader every verb uses.

    Formats (from the suffix; a file without one is sniffed): ``.json`` (a list of objects or strings,
    an object holding one such list, or JSON Lines), ``.jsonl``/``.ndjson`` (one object or string per
    line, a one-line file included), ``.csv``/``.tsv`` (a header row), ``.txt`` (one prompt per line,
    blank lines skipped). The text is ``field`` or the first of :data:`TEXT_FIELDS` present; the answer
    the first non-empty string of :data:`ANSWER_FIELDS`. ``limit`` keeps the first rows.

    Raises :class:`DataError` with one line naming the file and the 1-based line number for a missing
    file, non-UTF-8 bytes, malformed JSON/CSV, a row without text, or a file with no prompts.
    """
    p = Path(path)
    text = _read_text(p)
    fmt = _format_of(p, text)
    if fmt == "jsonl":
        items = _jsonl_items(text, str(p))
    elif fmt == "json":
        try:
            items = _json_items(text, str(p), field)
        except DataError:
            if not _looks_like_jsonl(text):
                raise
            items = _jsonl_items(text, str(p))  # JSON Lines in a .json file (e.g. BELLE's eval_set.json)
    elif fmt in ("csv", "tsv"):
        items = _csv_items(text, str(p), "," if fmt == "csv" else "\t")
    else:
        items = _text_items(text)
    if not items:
        raise DataError(f"{p}: the prompt set is empty (the file holds no prompts)")
    if limit is not None and limit > 0:
        items = items[:limit]
    return [_row(line, row, str(p), field) for line, row in items]


def load_prompt_file(path: str | os.PathLike, *, field: str | None = None, label: str | None = None,
                     name: str | None = None) -> PromptSet:
    """A :class:`PromptSet` of a prompt file read by :func:`read_prompt_file`.

    Ids default to ``{stem}-{k:05d}`` and must be unique; ``label`` overrides each row's label
    (default: the row's, else ``"unlabeled"``).
    """
    p = Path(path)
    prompts, seen = [], {}
    for k, row in enumerate(read_prompt_file(p, field=field)):
        pid = f"{p.stem}-{k:05d}" if row.id is None else row.id
        if pid in seen:
            raise DataError(f"{p}: line {row.line}: duplicate id {pid!r} (first at line {seen[pid]})")
        seen[pid] = row.line
        lab = label if label is not None else row.label
        prompts.append(Prompt(pid, row.text, lab if lab is not None else "unlabeled", row.category, row.history))
    return PromptSet(name or p.stem, prompts, meta={"source": str(p)})


def builtin_path(name: str) -> Path:
    if name not in BUILTIN_SETS:
        raise DataError(f"builtin:{name}: unknown prompt set (choose from {', '.join('builtin:' + n for n in BUILTIN_SETS)})")
    return Path(str(resources.files("r1probe.data").joinpath("builtin", BUILTIN_SETS[name][0])))


def load_builtin(name: str, *, label: str | None = None) -> PromptSet:
    path = builtin_path(name)
    _, default_label, desc = BUILTIN_SETS[name]
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
