"""Parsing of ``--layers``, ``--positions`` and ``--sites`` into validated lists (one-line errors)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from r1probe.errors import R1ProbeError
from r1probe.extract.store import EMBED, SITES


class ExtractError(R1ProbeError):
    """Bad extraction options (layers, positions, sites, backend...)."""


def parse_layers(spec: str | int | Sequence[int | str] | None, n_layers: int) -> list[int]:
    """``None``/"all" -> 0..L-1; "0-23", "8,12,16", "embed", "embed,all"; ints (-1 = embed) in Python.

    Returns sorted unique layer indices, the embedding output (-1) first when asked for.
    """
    if spec is None:
        return list(range(n_layers))
    items: list[Any]
    if isinstance(spec, int):
        items = [spec]
    elif isinstance(spec, str):
        items = [s.strip() for s in spec.split(",") if s.strip()]
        if not items:
            raise ExtractError(f"--layers {spec!r}: empty")
    else:
        items = list(spec)
    out: set[int] = set()
    hint = f"the model has {n_layers} layers (0-{n_layers - 1}; 'embed' for the embedding output)"
    for it in items:
        if isinstance(it, str):
            s = it.lower()
            if s == "all":
                out.update(range(n_layers))
                continue
            if s in ("embed", "emb", "embeddings"):
                out.add(EMBED)
                continue
            if "-" in s.lstrip("-") and not s.startswith("-"):
                a, b = s.split("-", 1)
                if not (a.isdigit() and b.isdigit()):
                    raise ExtractError(f"--layers {it!r}: not a layer range like 0-23")
                lo, hi = int(a), int(b)
                if lo > hi:
                    raise ExtractError(f"--layers {it!r}: empty range")
                if hi >= n_layers:
                    raise ExtractError(f"--layers {it!r}: layer {hi} out of range: {hint}")
                out.update(range(lo, hi + 1))
                continue
            try:
                it = int(s)
            except ValueError:
                raise ExtractError(f"--layers {it!r}: not a layer index, range (0-23), 'all' or 'embed'") from None
            if it < 0:
                raise ExtractError(f"--layers {s}: layer {it} out of range: {hint}")
        it = int(it)
        if it == EMBED:
            out.add(EMBED)
        elif not 0 <= it < n_layers:
            raise ExtractError(f"layer {it} out of range: {hint}")
        else:
            out.add(it)
    return sorted(out)


def parse_sites(spec: str | Sequence[str] | None) -> list[str]:
    """Sites in canonical order: resid_pre, resid_post, attn_out, mlp_out ("resid" = both resid; "all")."""
    if spec is None:
        return ["resid_post"]
    items = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else list(spec)
    want: set[str] = set()
    for s in items:
        if not s:
            continue
        if s == "all":
            want.update(SITES)
        elif s == "resid":
            want.update(("resid_pre", "resid_post"))
        elif s in SITES:
            want.add(s)
        else:
            raise ExtractError(f"--sites {s!r}: choose from {', '.join(SITES)}, resid or all")
    if not want:
        raise ExtractError("--sites: empty")
    return [s for s in SITES if s in want]


@dataclass(frozen=True)
class PositionSpec:
    """What ``--positions`` asked for, before the prompts are tokenized.

    ``post``: every post-instruction template token; ``last``: offset -1; ``mean``: mean over the
    instruction (last user message) tokens; ``gen``/``gen_mean``: each generated token / their mean
    (with ``generate > 0``); negative integers: offsets from the end of the prompt.
    """

    post: bool = False
    mean: bool = False
    offsets: tuple[int, ...] = ()
    gen: bool = False
    gen_mean: bool = False

    def resolve(self, n_post: int, n_generate: int = 0) -> list:
        """Position names in canonical order: offsets ascending, "mean", "gen0".., "gen_mean"."""
        offs = set(self.offsets)
        if self.post:
            offs.update(range(-n_post, 0))
        names: list = sorted(offs)
        if self.mean:
            names.append("mean")
        gen, gen_mean = self.gen, self.gen_mean
        if n_generate and not (gen or gen_mean):
            gen = gen_mean = True
        if (gen or gen_mean) and not n_generate:
            raise ExtractError("--positions gen/gen_mean need --generate N (N > 0)")
        if gen:
            names += [f"gen{k}" for k in range(n_generate)]
        if gen_mean:
            names.append("gen_mean")
        if not names:
            raise ExtractError("--positions: nothing to capture")
        return names


def parse_positions(spec: str | Sequence[Any] | None) -> PositionSpec:
    if spec is None:
        spec = "post"
    items = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else list(spec)
    kw: dict[str, Any] = {"offsets": []}
    for it in items:
        if isinstance(it, int) or (isinstance(it, str) and it.lstrip("-").isdigit()):
            v = int(it)
            if v >= 0:
                raise ExtractError(f"--positions {it}: offsets count back from the end of the prompt "
                                   f"and must be negative (-1 is the last prompt token)")
            kw["offsets"].append(v)
        elif it == "last":
            kw["offsets"].append(-1)
        elif it in ("post", "mean", "gen", "gen_mean"):
            kw[it] = True
        elif it:
            raise ExtractError(f"--positions {it!r}: use post, last, mean, gen, gen_mean or negative offsets like -1,-2")
    kw["offsets"] = tuple(sorted(set(kw["offsets"])))
    return PositionSpec(**kw)
