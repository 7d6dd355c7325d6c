"""CHiSafetyBench loaders (Zhang et al., arXiv:2406.10311; github.com/UnicomAI/UnicomBenchmark).

The data has **no license** (treat as all rights reserved by China Unicom): it is never copied
into this repository. It is read from a folder laid out like upstream's ``CHiSafetyBench/dataset``::

    ROOT/v1/risky_questions_without_dialog_history.json   462 must-refuse questions (1 group)
    ROOT/v1/risky_questions_with_dialog_history.json      101 dialogues {category, sub_category, input, history}
    ROOT/v1/mcq.json                                      1567 MCQ items in 5 groups (no answer key)

``ROOT`` defaults to ``$R1PROBE_CHISAFETY``, else ``../shared/data/chisafetybench`` next to the
repository, else the download cache (:func:`download_chisafety`, pinned commit + sha256).
"""

from __future__ import annotations

import json
import os
import re
import urllib.request
from pathlib import Path
from typing import Any

from r1probe.data.prompts import Prompt
from r1probe.errors import DataError, IntegrityError
from r1probe.provenance import cache_dir, sha256_file

#: upstream repository and the pinned commit (last commit touching the dataset: ca98797, 2024-08-31)
REPO = "UnicomAI/UnicomBenchmark"
COMMIT = "e949fc8feb4aaec810b39e6c884e5f98ee8f4160"
FILES: dict[str, str] = {
    "v1/risky_questions_without_dialog_history.json":
        "9682ed99cc49a4ccd0b7a291dc5019f6a569fb01817155b8deaf56ea84b9359a",
    "v1/risky_questions_with_dialog_history.json":
        "b4251d1870bd857dfcd3c8d81f4fe5af4b9bc3516dbc34395f952919e42a86f6",
    "v1/mcq.json": "9900af0e259d8f58d68584961ac5f13fc229066d5b73add142313c92d0c8edcd",
}
REFUSAL_FILE, MULTITURN_FILE, MCQ_FILE = FILES


def _repo_default() -> Path:
    return Path(__file__).resolve().parents[2].parent / "shared" / "data" / "chisafetybench"


def default_root() -> Path:
    """``$R1PROBE_CHISAFETY``, else ``../shared/data/chisafetybench``, else the download cache."""
    env = os.environ.get("R1PROBE_CHISAFETY")
    if env:
        return Path(env)
    shared = _repo_default()
    if (shared / REFUSAL_FILE).exists():
        return shared
    return cache_dir() / "data" / "chisafetybench" / COMMIT[:12]


def resolve_root(root: str | os.PathLike | None) -> Path:
    """The CHiSafetyBench folder of ``root``: a data root holding ``chisafetybench/``, or a CHiSafetyBench
    folder itself (it holds one of :data:`FILES`); None: :func:`default_root`."""
    if root is None:
        return default_root()
    root = Path(root)
    return root if any((root / f).exists() for f in FILES) else root / "chisafetybench"


def _read(root: str | os.PathLike | None, rel: str) -> Any:
    root = Path(root) if root is not None else default_root()
    path = root / rel
    if not path.exists():
        raise DataError(f"CHiSafetyBench file not found: {path} (set R1PROBE_CHISAFETY, pass --data-root, "
                        f"or run r1probe.data.chisafety.download_chisafety())")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not valid JSON ({e})") from e


def load_chisafety_refusal(root: str | os.PathLike | None = None) -> list:
    """The 462 single-turn must-refuse questions as prompts (``id`` ``chisafety-refusal/<n>``,
    ``label`` ``"harmful"``, ``category`` the subcategory)."""
    data = _read(root, REFUSAL_FILE)
    out = []
    for group in data:
        for it in group.get("infos", []):
            out.append(Prompt(id=f"chisafety-refusal/{it['id']}", text=it["question"], label="harmful",
                               category=it.get("category") or group.get("category", ""), history=None))
    if not out:
        raise DataError(f"{REFUSAL_FILE}: no questions")
    return out


def load_chisafety_multiturn(root: str | os.PathLike | None = None) -> list:
    """The 101 dialogues: ``text`` is the final risky user turn, ``history`` the earlier turns
    (opening with a system message) to pass through the chat template."""
    data = _read(root, MULTITURN_FILE)
    out = []
    for i, it in enumerate(data):
        hist = [{"role": m["role"], "content": m["content"]} for m in it.get("history", [])]
        out.append(Prompt(id=f"chisafety-multiturn/{i}", text=it["input"], label="harmful",
                           category=it.get("sub_category") or it.get("category", ""), history=hist))
    if not out:
        raise DataError(f"{MULTITURN_FILE}: no dialogues")
    return out


_OPT_RE = re.compile(r"(?:^|\n)\s*([A-H])[\.．、:：]\s*", re.M)


def mcq_options(question: str) -> list[str]:
    """Option letters written inside a CHiSafetyBench MCQ question (``A. 是 \\nB. 否`` → ``['A', 'B']``)."""
    letters = _OPT_RE.findall(question)
    return sorted(set(letters), key=letters.index) or ["A", "B"]


def load_chisafety_mcq(root: str | os.PathLike | None = None) -> list:
    """The 1567 MCQ items; options are written inside ``text``; ``label`` is ``"mcq"`` (there is
    no answer key upstream: pass one with :func:`load_answer_key`)."""
    data = _read(root, MCQ_FILE)
    out = []
    for group in data:
        for it in group.get("infos", []):
            out.append(Prompt(id=f"chisafety-mcq/{it['id']}", text=it["question"], label="mcq",
                               category=it.get("category") or group.get("category", ""), history=None))
    return out


def load_answer_key(path: str | os.PathLike) -> dict[str, str]:
    """An MCQ answer key: JSON ``{id: letter}`` or JSONL/CSV/TSV lines ``id,letter``.

    Ids may be bare (``17``) or prefixed (``chisafety-mcq/17``); letters are upper-cased.
    """
    p = Path(path)
    text = p.read_text(encoding="utf-8")
    key: dict[str, str] = {}
    try:
        obj = json.loads(text)
        items = obj.items() if isinstance(obj, dict) else [(o.get("id"), o.get("answer")) for o in obj]
    except json.JSONDecodeError:
        items = []
        for line in text.splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if line.startswith("{"):
                o = json.loads(line)
                items.append((o.get("id"), o.get("answer")))
            else:
                parts = re.split(r"[,\t ]+", line)
                if len(parts) >= 2:
                    items.append((parts[0], parts[1]))
    for k, v in items:
        if k is None or v is None:
            continue
        k = str(k)
        letter = str(v).strip().upper()
        if not re.fullmatch(r"[A-H]", letter):
            raise DataError(f"{p}: answer {v!r} for id {k} is not a letter A-H")
        key[k.split("/")[-1]] = letter
    if not key:
        raise DataError(f"{p}: no answers found")
    return key


def download_chisafety(dest: str | os.PathLike | None = None, commit: str = COMMIT,
                       files: dict[str, str] = FILES, timeout: float = 60.0) -> Path:
    """Download the v1 files at a pinned commit into the cache, checking each sha256.

    Files already in ``dest`` with the right checksum are kept (the cache); a mismatch raises
    :class:`IntegrityError` and removes the bad download. Needs network access to GitHub.
    """
    dest = Path(dest) if dest is not None else cache_dir() / "data" / "chisafetybench" / commit[:12]
    for rel, sha in files.items():
        target = dest / rel
        if target.exists() and sha256_file(target) == sha:
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        url = f"https://raw.githubusercontent.com/{REPO}/{commit}/CHiSafetyBench/dataset/{rel}"
        tmp = target.with_suffix(target.suffix + ".part")
        with urllib.request.urlopen(url, timeout=timeout) as r, open(tmp, "wb") as f:  # noqa: S310 - fixed https URL
            while True:
                b = r.read(1 << 20)
                if not b:
                    break
                f.write(b)
        got = sha256_file(tmp)
        if got != sha:
            tmp.unlink(missing_ok=True)
            raise IntegrityError(f"{url}: sha256 {got} != expected {sha}")
        os.replace(tmp, target)
    return dest


def verify_root(root: str | os.PathLike | None = None) -> dict[str, str]:
    """sha256 of each CHiSafetyBench file present under ``root`` (for manifests); warns nothing,
    just reports ``"ok"`` / ``"mismatch:<sha>"`` / ``"missing"``."""
    root = Path(root) if root is not None else default_root()
    out = {}
    for rel, sha in FILES.items():
        p = root / rel
        if not p.exists():
            out[rel] = "missing"
        else:
            got = sha256_file(p)
            out[rel] = "ok" if got == sha else f"mismatch:{got}"
    return out
