"""The Optuna driver of the edit search: a resumable multi-objective study over :class:`EditParams`.

Objectives, on the *search* splits only: refusal on harmful prompts (maximise), refusal on CValues
search prompts (minimise), and the ratio of the gold-solution NLL on GSM8K train to the unedited
model's (minimise). Constraints (Optuna's constrained TPE / NSGA-II; ``≤ 0`` is feasible): borderline
refusal at most ``border_margin`` above the unedited model's, NLL ratio at most ``1 + nll_tol``.

The study lives in SQLite (``study.db``): kill the process at any time and rerun the same command to
continue (trials left running by a killed process are marked failed).
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

from r1probe.tuning.data import SearchData
from r1probe.tuning.edit import WRITER_SETS, EditParams, TrialEditor
from r1probe.tuning import objectives
from r1probe.tuning.settings import EditSearchSettings

#: the objectives, in the order the study returns them
OBJECTIVES = ("harm_refusal", "border_refusal", "nll_ratio")


def suggest(trial, settings: EditSearchSettings, n_layers: int, has_probe: bool) -> EditParams:
    """The trial's point of the search space."""
    kinds = list(settings.dir_kinds) + (["probe"] if has_probe and "probe" not in settings.dir_kinds else [])
    return EditParams(
        kind=trial.suggest_categorical("kind", kinds),
        dir_layer=trial.suggest_categorical("dir_layer", list(settings.dir_layers)),
        center=trial.suggest_float("center", 0.0, n_layers - 1.0),
        width=trial.suggest_float("width", 0.5, n_layers / 3.0),
        beta=trial.suggest_float("beta", 0.0, settings.max_beta),
        ablate_border=trial.suggest_float("ablate_border", 0.0, 1.0),
        writers=trial.suggest_categorical("writers", list(WRITER_SETS)),
    )


def constraints(values: dict, base: dict, settings: EditSearchSettings) -> list[float]:
    """Constraint values (``≤ 0`` is feasible): ``[border − base_border − margin, nll_ratio − (1 + tol)]``."""
    return [values["border_refusal"] - base["border_refusal"] - settings.border_margin,
            values["nll_ratio"] - (1.0 + settings.nll_tol)]


def open_study(work: Path, settings: EditSearchSettings, name: str = "enhance"):
    """Create or reopen the SQLite-backed study; trials left RUNNING by a killed process are failed."""
    import optuna
    from optuna.trial import TrialState

    work.mkdir(parents=True, exist_ok=True)
    storage = optuna.storages.RDBStorage(f"sqlite:///{(work / 'study.db').resolve()}")
    if settings.sampler == "nsga2":
        sampler = optuna.samplers.NSGAIISampler(seed=settings.seed)
    else:
        sampler = optuna.samplers.TPESampler(seed=settings.seed, n_startup_trials=min(10, max(2, settings.trials // 4)),
                                             multivariate=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the search logs one line per trial itself
    study = optuna.create_study(study_name=name, storage=storage, sampler=sampler, load_if_exists=True,
                                directions=["maximize", "minimize", "minimize"])
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        storage.set_trial_state_values(t._trial_id, TrialState.FAIL)  # a killed process's trial
    return study


def seed_trials(study, settings: EditSearchSettings, n_layers: int) -> None:
    """Enqueue two informed starting points once: plain amplification (β = 1, a kernel over the upper
    middle layers) and the same on the second direction kind with half the borderline direction removed."""
    if study.user_attrs.get("seeded"):
        return
    mid = min(settings.dir_layers, key=lambda x: abs(x - n_layers // 2))
    c, w = (n_layers - 1) * 0.56, n_layers / 6.0
    study.enqueue_trial({"kind": settings.dir_kinds[0], "dir_layer": mid, "center": c, "width": w, "beta": 1.0,
                         "ablate_border": 0.0, "writers": "both"})
    k2 = "orth" if "orth" in settings.dir_kinds else settings.dir_kinds[-1]
    study.enqueue_trial({"kind": k2, "dir_layer": mid, "center": c, "width": w, "beta": 1.0,
                         "ablate_border": 0.5, "writers": "both"})
    study.set_user_attr("seeded", True)


def run_search(lm, data: SearchData, dirs: dict, settings: EditSearchSettings, work: Path, *,
               log_fn: Callable[[str], None] = print) -> "optuna.Study":  # noqa: F821
    """Run (or continue) the study until ``settings.trials`` trials are complete or the budget has passed."""
    from optuna.trial import TrialState

    cfg = settings
    study = open_study(work, cfg)
    n = lm.layout.n_layers
    base = study.user_attrs.get("baseline")
    if base is None:
        t0 = time.perf_counter()
        base = objectives.measure(lm, data.harmful_search, data.border_search, data.nll_search,
                                  max_new_tokens=cfg.max_new_tokens, batch_size=cfg.batch_size)
        base["nll_ratio"] = 1.0
        base["seconds"] = time.perf_counter() - t0
        study.set_user_attr("baseline", base)
        study.set_user_attr("config", cfg.model_dump(mode="json"))
        study.set_user_attr("search_ids", sorted(data.search_ids()))
        log_fn(f"baseline (search splits): harmful {base['harm_refusal']:.3f}, borderline {base['border_refusal']:.3f}, "
               f"gold NLL {base['nll']:.4f} ({base['seconds']:.0f}s)")
    seed_trials(study, cfg, n)
    editor = TrialEditor(lm, dirs)
    has_probe = "probe" in dirs

    def objective(trial):
        p = suggest(trial, cfg, n, has_probe)
        t0 = time.perf_counter()
        with editor.applied(p) as recs:
            v = objectives.measure(lm, data.harmful_search, data.border_search, data.nll_search,
                                   max_new_tokens=cfg.max_new_tokens, batch_size=cfg.batch_size)
        v["nll_ratio"] = v["nll"] / base["nll"]
        cons = constraints(v, base, cfg)
        trial.set_user_attr("constraints", cons)
        trial.set_constraint("border_rise", cons[0])  # the samplers favour feasible trials
        trial.set_constraint("nll_rise", cons[1])
        trial.set_user_attr("values", v)
        trial.set_user_attr("params", asdict(p))
        trial.set_user_attr("n_edits", len(recs))
        trial.set_user_attr("seconds", time.perf_counter() - t0)
        log_fn(f"trial {trial.number}: harmful {v['harm_refusal']:.3f} borderline {v['border_refusal']:.3f} "
               f"NLL x{v['nll_ratio']:.4f} {'feasible' if max(cons) <= 0 else 'infeasible'} "
               f"({time.perf_counter() - t0:.0f}s) {p}")
        return v["harm_refusal"], v["border_refusal"], v["nll_ratio"]

    start = time.perf_counter()
    while True:
        done = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
        left = cfg.budget_s - (time.perf_counter() - start)
        if done >= cfg.trials or left <= 0:
            break
        study.optimize(objective, n_trials=1, timeout=None, catch=(RuntimeError,), gc_after_trial=False)
        last = study.trials[-1]
        if last.state == TrialState.FAIL:
            log_fn(f"trial {last.number} failed")
    editor.restore()
    return study


__all__ = ["OBJECTIVES", "suggest", "constraints", "open_study", "seed_trials", "run_search"]
