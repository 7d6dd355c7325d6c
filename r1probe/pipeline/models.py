"""The models a preset run loads: at most one in memory, each loaded only when a stage needs it."""

from __future__ import annotations

from pathlib import Path


class ModelCache:
    """Loads a model spec at most once while it stays the current one; keeps one model in memory."""

    def __init__(self, *, dtype: str = "auto", device: str = "auto", chat_template: str | None = None):
        self.load_kw = {"dtype": dtype, "device": device, "chat_template": chat_template}
        self._models: dict = {}

    def get(self, spec: str):
        """The loaded model of ``spec`` (loading it, and dropping any other, when it is not the current one)."""
        if spec not in self._models:
            from r1probe.models import load_model

            self._models.clear()
            self._models[spec] = load_model(spec, **self.load_kw)
        return self._models[spec]

    def take(self, spec: str):
        """The model of ``spec``, forgotten by the cache: for a stage that changes its weights in place."""
        lm = self.get(spec)
        self.release()
        return lm

    def release(self) -> None:
        """Forget every loaded model (a stage that loads its own copy, e.g. training, calls this first)."""
        self._models.clear()


def model_key(spec: str) -> str:
    """A cache key of a model spec: file sizes and times of a checkpoint folder, the sha256 of a .gguf
    file, else the spec and its revision."""
    from r1probe.models.spec import parse_spec
    from r1probe.provenance import sha256_file

    s = parse_spec(spec)
    if s.kind == "dir":
        files = sorted(Path(s.target).glob("*.safetensors")) + [Path(s.target) / "config.json"]
        return "dir:" + ",".join(f"{f.name}:{f.stat().st_size}:{int(f.stat().st_mtime)}" for f in files if f.exists())
    if s.kind == "gguf":
        return "gguf:" + sha256_file(s.target)
    return f"{s.raw}@{s.revision or ''}"
