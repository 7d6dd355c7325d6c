"""The activation store: a folder of safetensors shards, ``rows.jsonl`` and ``manifest.json``.

Layout::

    DIR/manifest.json            what made the store (model, data sha256, layers, positions, ...)
    DIR/rows.jsonl               one line per row: id, label, category, set, n_tokens (+ generation)
    DIR/shard-00000.safetensors  tensors "<site>.<layer>" of shape [rows, P, d] and "rows" (int64 row ids)

Rows are numbered in prompt order (all rows of the first prompt set, then the next...). A shard
holds any subset of rows (extraction sorts them by length); reading scatters them back into order.

Crash safety: a shard is written to a temporary file, fsynced and renamed, so a shard file that
exists is complete; its metadata carries the configuration hash and is re-checked on resume.
``manifest.json`` says ``"complete": true`` only after the last shard is in place.

Layer convention: layer ``i`` of ``resid_post`` is the residual stream after block ``i``
(``hidden_states[i + 1]``); layer ``-1`` ("embed") is the embedding output (``hidden_states[0]``).
``resid_pre`` of layer ``i`` is the block's input (equal to ``resid_post`` of layer ``i - 1``).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch

from r1probe.errors import DataError
from r1probe.provenance import atomic_write_json, atomic_write_text, publish_mode

MANIFEST, ROWS = "manifest.json", "rows.jsonl"
SHARD_FMT = "shard-{:05d}.safetensors"
FORMAT = "r1probe.activations/1"
SITES = ("resid_pre", "resid_post", "attn_out", "mlp_out")
EMBED = -1


def tensor_key(site: str, layer: int) -> str:
    return f"{site}.{layer}"


def layer_name(layer: int) -> str:
    return "embed" if layer == EMBED else str(layer)


def _norm_position(p: Any) -> Any:
    """Positions are negative ints (offsets from the end of the prompt) or names ("mean", "gen3"...)."""
    if isinstance(p, str):
        s = p.strip()
        if s.lstrip("-").isdigit():
            return int(s)
        return s
    return int(p)


class ActivationStore:
    """Read an activation store by layer, position and label.

    ``get(layer, position=None, label=None, site="resid_post")`` returns float32 ``[n, d]`` for one
    position or ``[n, P, d]`` for all, rows in store order (optionally only rows with ``label``).
    Rows whose generated continuation ended before a ``genK`` position hold NaN there.
    """

    def __init__(self, path: str | os.PathLike, *, allow_partial: bool = False):
        self.path = Path(path)
        mpath = self.path / MANIFEST
        if not mpath.exists():
            raise DataError(f"{self.path}: not an activation store (no {MANIFEST})")
        try:
            self.manifest: dict = json.loads(mpath.read_text("utf-8"))
        except json.JSONDecodeError as e:
            raise DataError(f"{mpath}: line {e.lineno}: invalid JSON ({e.msg})") from None
        if self.manifest.get("format") != FORMAT:
            raise DataError(f"{self.path}: unknown store format {self.manifest.get('format')!r} (expected {FORMAT})")
        if not self.manifest.get("complete") and not allow_partial:
            done = len(self.finished_shards())
            raise DataError(f"{self.path}: incomplete store ({done}/{len(self.manifest['shards'])} shards); "
                            f"rerun the same extract command to resume")
        self.rows: list[dict] = [json.loads(line) for line in (self.path / ROWS).read_text("utf-8").splitlines() if line]
        self._cache: dict[str, torch.Tensor] = {}

    # -- metadata --------------------------------------------------------------------------
    @property
    def layers(self) -> list[int]:
        return list(self.manifest["layers"])

    @property
    def positions(self) -> list:
        return list(self.manifest["positions"])

    @property
    def sites(self) -> list[str]:
        return list(self.manifest["sites"])

    @property
    def labels(self) -> list[str]:
        return [r["label"] for r in self.rows]

    @property
    def ids(self) -> list[str]:
        return [r["id"] for r in self.rows]

    @property
    def categories(self) -> list[str | None]:
        return [r.get("category") for r in self.rows]

    @property
    def d_model(self) -> int:
        return int(self.manifest["d_model"])

    @property
    def complete(self) -> bool:
        return bool(self.manifest.get("complete"))

    def label_counts(self) -> dict[str, int]:
        return dict(Counter(self.labels))

    def __len__(self) -> int:
        return len(self.rows)

    def __repr__(self) -> str:
        return (f"ActivationStore({str(self.path)!r}, n={len(self)}, layers={len(self.layers)}, "
                f"positions={self.positions}, sites={self.sites}, labels={self.label_counts()})")

    def shard_paths(self) -> list[Path]:
        return [self.path / s for s in self.manifest["shards"]]

    def finished_shards(self) -> list[Path]:
        return [p for p in self.shard_paths() if p.exists()]

    # -- selection -------------------------------------------------------------------------
    def position_index(self, position: Any) -> int:
        """Index of ``position`` (an offset like -1, a name like "mean", or "last" for -1) in ``positions``."""
        pos = self.positions
        p = _norm_position(position)
        if p == "last":
            p = -1
        if p in pos:
            return pos.index(p)
        raise DataError(f"position {position!r} not in this store (positions: {pos})")

    def row_indices(self, label: str | Sequence[str] | None = None) -> torch.Tensor:
        if label is None:
            return torch.arange(len(self.rows))
        want = {label} if isinstance(label, str) else set(label)
        unknown = want - set(self.labels)
        if unknown:
            raise DataError(f"label(s) {sorted(unknown)} not in this store (labels: {sorted(set(self.labels))})")
        return torch.tensor([i for i, lab in enumerate(self.labels) if lab in want], dtype=torch.long)

    def _check(self, layer: Any, site: str) -> int:
        if site not in self.sites:
            raise DataError(f"site {site!r} not in this store (sites: {self.sites})")
        if layer == "embed":
            layer = EMBED
        layer = int(layer)
        if layer not in self.layers:
            raise DataError(f"layer {layer_name(layer)} not in this store (layers: "
                            f"{', '.join(layer_name(x) for x in self.layers)})")
        if tensor_key(site, layer) not in self.manifest.get("keys", [tensor_key(site, layer)]):
            raise DataError(f"{site} at layer {layer_name(layer)} is not in this store (the embedding "
                            f"layer only has resid_post)")
        return layer

    def _load(self, key: str) -> torch.Tensor:
        """All rows of one tensor in store order, in the stored dtype (cached for the last key only)."""
        if key in self._cache:
            return self._cache[key]
        from safetensors import safe_open

        out: torch.Tensor | None = None
        filled = torch.zeros(len(self.rows), dtype=torch.bool)
        for path in self.finished_shards():
            with safe_open(str(path), framework="pt") as f:
                rows = f.get_tensor("rows")
                t = f.get_tensor(key)
            if out is None:
                out = torch.full((len(self.rows), *t.shape[1:]), float("nan"), dtype=t.dtype)
            out[rows] = t
            filled[rows] = True
        if out is None:
            raise DataError(f"{self.path}: no finished shards")
        self._cache = {key: out}
        return out

    def get(self, layer: int | str, position: Any = None, label: str | Sequence[str] | None = None,
            site: str = "resid_post", dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Activations at ``layer`` (int, -1/"embed" for embeddings) as ``dtype``.

        ``position=None`` -> ``[n, P, d]``; one position -> ``[n, d]``; ``label`` keeps those rows.
        """
        layer = self._check(layer, site)
        t = self._load(tensor_key(site, layer))
        if position is not None:
            t = t[:, self.position_index(position)]
        if label is not None:
            t = t[self.row_indices(label)]
        return t.to(dtype)

    def mean(self, layer: int | str, position: Any = None, label: str | None = None,
             site: str = "resid_post") -> torch.Tensor:
        """Float64 mean over the selected rows (NaN rows ignored): ``[d]`` or ``[P, d]``."""
        x = self.get(layer, position, label, site, dtype=torch.float64)
        return x.nanmean(dim=0)

    @property
    def generated(self) -> list[str] | None:
        """The generated continuations (when the store was made with ``generate > 0``)."""
        if not self.manifest.get("generate"):
            return None
        return [r.get("generated", "") for r in self.rows]


class StoreWriter:
    """Writes (or resumes) a store: manifest first, then shards atomically, then ``complete``."""

    def __init__(self, path: str | os.PathLike, manifest: dict, rows: list[dict], shards: list[list[int]],
                 *, overwrite: bool = False):
        self.path = Path(path)
        self.shards = shards
        cfg = manifest["config_sha256"]
        mpath = self.path / MANIFEST
        self.resumed = False
        if self.path.exists() and not self.path.is_dir():
            raise DataError(f"{self.path}: exists and is not a folder")
        if mpath.exists():
            try:
                old = json.loads(mpath.read_text("utf-8"))
            except json.JSONDecodeError:
                old = {}
            if old.get("config_sha256") != cfg and not overwrite:
                raise DataError(f"{self.path}: holds a store made with a different configuration "
                                f"(model, prompts, layers, positions, sites, dtype or backend); "
                                f"choose another --out or pass --overwrite")
            if old.get("config_sha256") != cfg:
                self._clear()
            else:
                self.resumed = True
        elif self.path.exists() and any(self.path.iterdir()) and not overwrite:
            raise DataError(f"{self.path}: folder exists and is not empty (not a store); choose another --out")
        self.path.mkdir(parents=True, exist_ok=True)
        for p in self.path.glob(".shard-*.tmp"):  # left by an interrupted write
            p.unlink(missing_ok=True)
        names = [SHARD_FMT.format(i) for i in range(len(shards))]
        self.manifest = {"format": FORMAT, **manifest, "shards": names, "complete": False}
        if self.resumed:
            old_created = old.get("created")
            if old_created:
                self.manifest["first_started"] = old.get("first_started", old_created)
        atomic_write_text(self.path / ROWS, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        atomic_write_json(mpath, self.manifest)

    def _clear(self) -> None:
        for p in list(self.path.glob("shard-*.safetensors")) + [self.path / ROWS, self.path / MANIFEST]:
            p.unlink(missing_ok=True)

    def shard_path(self, i: int) -> Path:
        return self.path / SHARD_FMT.format(i)

    def is_done(self, i: int) -> bool:
        """True when shard ``i`` exists, reads back, and was made by this configuration for these rows."""
        p = self.shard_path(i)
        if not p.exists():
            return False
        try:
            from safetensors import safe_open

            with safe_open(str(p), framework="pt") as f:
                meta = f.metadata() or {}
                rows = f.get_tensor("rows").tolist()
            return meta.get("config_sha256") == self.manifest["config_sha256"] and rows == list(self.shards[i])
        except Exception:  # noqa: BLE001 - any unreadable shard is simply redone
            return False

    def pending(self) -> list[int]:
        return [i for i in range(len(self.shards)) if not self.is_done(i)]

    def write(self, i: int, tensors: dict[str, torch.Tensor], generated: list[str] | None = None) -> None:
        """Write shard ``i`` atomically (``generated``: continuation texts of its rows, kept in metadata)."""
        from safetensors.torch import save_file

        rows = torch.tensor(self.shards[i], dtype=torch.long)
        data = {k: v.contiguous() for k, v in tensors.items()}
        data["rows"] = rows
        fd, tmp = tempfile.mkstemp(dir=self.path, prefix=".shard-", suffix=".tmp")
        os.close(fd)
        try:
            meta = {"config_sha256": self.manifest["config_sha256"], "shard": str(i)}
            if generated is not None:
                meta["generated"] = json.dumps(generated, ensure_ascii=False)
            save_file(data, tmp, metadata=meta)
            publish_mode(tmp)  # mkstemp files are private (0600)
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            os.replace(tmp, self.shard_path(i))
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def finish(self, rows: list[dict] | None = None, **extra: Any) -> None:
        """Mark the store complete; with ``rows``, first copy generated texts from the shards into rows.jsonl."""
        if rows is not None and self.manifest.get("generate"):
            from safetensors import safe_open

            rows = [dict(r) for r in rows]
            for i in range(len(self.shards)):
                with safe_open(str(self.shard_path(i)), framework="pt") as f:
                    texts = json.loads((f.metadata() or {}).get("generated", "[]"))
                for r, t in zip(self.shards[i], texts):
                    rows[r]["generated"] = t
            atomic_write_text(self.path / ROWS, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        self.manifest.update(extra)
        self.manifest["complete"] = True
        atomic_write_json(self.path / MANIFEST, self.manifest)


def open_store(path: str | os.PathLike, **kw) -> ActivationStore:
    return ActivationStore(path, **kw)


def label_counts(rows: Iterable[dict]) -> dict[str, int]:
    return dict(Counter(r["label"] for r in rows))
