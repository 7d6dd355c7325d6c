"""``compare_models``: from two model specs to the comparison folder (extract, probe, compare, transfer)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

from r1probe.analysis.compare import compare_stores
from r1probe.analysis.tables import fmt_ci, write_table
from r1probe.provenance import atomic_write_json, base_manifest


def _best_layer(curves: dict, n_layers: int, max_frac: float = 0.8) -> int:
    auc = curves.get("mean_diff", {}).get("auroc", [])
    ok = [(a, i) for i, a in enumerate(auc) if a is not None and math.isfinite(a) and i < max_frac * n_layers]
    return max(ok)[1] if ok else n_layers // 2


def eval_side_by_side(a: str, b: str, names: tuple[str, str], out: Path) -> dict:
    """Metric table of two eval runs with paired-bootstrap differences (``eval.runner.compare_runs``)."""
    from r1probe.eval.runner import compare_runs

    rows = compare_runs(a, b)
    header = ["benchmark", "metric", names[0], names[1], f"{names[1]} − {names[0]} [95% CI]"]
    table = [[r["bench"], r["metric"], fmt_ci(r.get("a")), fmt_ci(r.get("b")), fmt_ci(r.get("diff"), r.get("ci95"))]
             for r in rows]
    write_table(header, table, out / "eval_side_by_side", sources=[a, b],
                caption="Safety and reasoning of both models (paired bootstrap on shared items)")
    return {"rows": rows}


def compare_models(base: str, distilled: str, *, out, harmful: str = "builtin:zh-harmful",
                   harmless: str = "builtin:zh-harmless", n_train: int = 96, position=-1, directions=None,
                   eval_base=None, eval_distilled=None, transfer_n: int = 16, dtype: str = "auto", seed: int = 0,
                   names: tuple[str, str] = ("base", "distilled"), log: Callable[[str], None] = print) -> dict:
    from r1probe.data.prompts import load_prompt_set
    from r1probe.extract import extract_activations
    from r1probe.models import load_model

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    sets = [load_prompt_set(harmful, label="harmful", split="train", seed=seed).sample(n_train, seed=seed),
            load_prompt_set(harmless, label="harmless", split="train", seed=seed).sample(n_train, seed=seed)]
    stores = []
    for name, spec in zip(names, (base, distilled)):
        log(f"[compare] extracting {name}: {spec}")
        lm = load_model(spec, dtype=dtype)
        stores.append(extract_activations(lm, sets, positions="post", out_dir=out / f"store_{name}", progress=True))
        del lm
    sa, sb = stores
    if directions:
        from r1probe.steering.directions import load_direction, probe_meta

        d = load_direction(directions, "chosen", sa.d_model)
        L = int((probe_meta(directions).get("chosen") or {}).get("layer", sa.layers[len(sa.layers) // 2]))
    else:
        from r1probe.analysis.compare import layer_probe_curves

        curves, dirs = layer_probe_curves(sa, position, [l for l in sa.layers if l >= 0], ("mean_diff",), seed)
        L = _best_layer(curves, len(dirs))
        d = dirs[L]
    res = compare_stores(sa, sb, names=names, position=position, direction_a=d if sa.d_model == sb.d_model else None,
                         direction_layer=L, out_dir=out, sources=[sa.path / "manifest.json", sb.path / "manifest.json"],
                         seed=seed)
    headline = {"layer": L, "cka_mean": _mean(res["cka"])}
    if "direction_cosine" in res:
        headline["direction_cosine_at_layer"] = res["direction_cosine"][sa.layers.index(L)] if L in sa.layers else None
        headline["transfer_auroc_at_layer"] = res["transfer_auroc"][sa.layers.index(L)] if L in sa.layers else None
    if transfer_n and sa.d_model == sb.d_model:
        from r1probe.eval.api import refusal_rate
        from r1probe.steering.plan import SteeringPlan

        lmb = load_model(distilled, dtype=dtype)
        hv = load_prompt_set(harmful, split="val", seed=seed).sample(transfer_n, seed=seed).texts
        nv = load_prompt_set(harmless, split="val", seed=seed).sample(transfer_n, seed=seed).texts
        norm = float(d.double().norm())
        tr = {"n": transfer_n, "layer": L,
              "harmful_refusal": refusal_rate(lmb, hv)["rate"],
              "harmful_refusal_ablated": refusal_rate(lmb, hv, plan=SteeringPlan.ablate_everywhere(d, lmb.layout.n_layers))["rate"],
              "harmless_refusal": refusal_rate(lmb, nv)["rate"],
              "harmless_refusal_added": refusal_rate(lmb, nv, plan=SteeringPlan.add_at(L + 1, d, norm))["rate"]}
        res["transfer_refusal"] = tr
        headline["transfer_refusal"] = tr
    if eval_base and eval_distilled:
        res["eval"] = eval_side_by_side(eval_base, eval_distilled, names, out)
    res["headline"] = headline
    atomic_write_json(out / "compare.json", base_manifest(result=res, base=base, distilled=distilled,
                                                          harmful=harmful, harmless=harmless))
    return res


def _mean(xs):
    v = [x for x in xs if x is not None and math.isfinite(x)]
    return sum(v) / len(v) if v else None
