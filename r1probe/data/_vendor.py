"""Rebuild the vendored built-in prompt sets from the upstream copies in ``../shared/data``.

Run ``python -m r1probe.data._vendor [SHARED_DATA]``. Only permissively licensed, non-Alpaca
Chinese prompts are vendored (see ``DATA_LICENSES.md``):

* ``builtin/zh_harmful.jsonl``: PolyRefuse zh harmful train (260) + val (39) (Apache-2.0) and the
  ``zh`` column of MultiJail (315, MIT);
* ``builtin/zh_harmless.jsonl``: the 1,000 BELLE eval questions (ODC-By-1.0).

Each row is ``{"id", "text", "category", "source"}``; texts are stripped and de-duplicated (first wins).
"""

from __future__ import annotations

import ast
import csv
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent / "builtin"


def _rows_harmful(shared: Path) -> list[dict]:
    rows = []
    for part in ("train", "val"):
        data = json.loads((shared / "polyrefuse_zh" / f"harmful_{part}_translated_zh.json").read_text("utf-8"))
        for i, r in enumerate(data):
            rows.append({"id": f"polyrefuse-{part}-{i:04d}", "text": r["instruction"].strip(),
                         "category": r.get("category"), "source": f"PolyRefuse harmful_{part}_translated_zh.json"})
    with open(shared / "multijail" / "MultiJail.csv", encoding="utf-8-sig", newline="") as f:
        for r in csv.DictReader(f):
            tags = ast.literal_eval(r["tags"]) if r["tags"].startswith("[") else [r["tags"]]
            rows.append({"id": f"multijail-{int(r['id']):03d}", "text": r["zh"].strip(),
                         "category": "; ".join(tags) or None, "source": "MultiJail.csv (zh)"})
    return rows


def _rows_harmless(shared: Path) -> list[dict]:
    rows = []
    with open(shared / "belle_eval" / "eval_set.json", encoding="utf-8") as f:
        for i, line in enumerate(f):
            if line.strip():
                r = json.loads(line)
                rows.append({"id": f"belle-{i:04d}", "text": r["question"].strip(),
                             "category": r["class"].replace("\xa0", " "), "source": "BELLE eval_set.json"})
    return rows


def _write(rows: list[dict], path: Path) -> int:
    seen, out = set(), []
    for r in rows:
        if r["text"] and r["text"] not in seen:
            seen.add(r["text"])
            out.append(r)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in out), encoding="utf-8")
    return len(out)


def main(shared: str | None = None) -> None:
    root = Path(shared) if shared else Path(__file__).resolve().parents[2].parent / "shared" / "data"
    HERE.mkdir(exist_ok=True)
    print("zh_harmful", _write(_rows_harmful(root), HERE / "zh_harmful.jsonl"))
    print("zh_harmless", _write(_rows_harmless(root), HERE / "zh_harmless.jsonl"))


if __name__ == "__main__":
    main(*sys.argv[1:2])
