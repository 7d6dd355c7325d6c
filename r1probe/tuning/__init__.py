"""Tuning: searches over steering and weight-edit settings, measured on the dev splits.

The edit search (``r1probe edit-search``): a multi-objective Optuna search for an exportable
refusal-enhancing weight edit under an over-refusal budget.

- :mod:`~r1probe.tuning.settings`: its settings (``EditSearchSettings``);
- :mod:`~r1probe.tuning.data`: the directions / search / report splits;
- :mod:`~r1probe.tuning.objectives`: refusal (the refusal rule) and the gold-solution NLL;
- :mod:`~r1probe.tuning.directions`: difference-in-means directions from the activation reader;
- :mod:`~r1probe.tuning.edit`: the searched edit (a depth kernel of amplifications) and its trial editor;
- :mod:`~r1probe.tuning.search`: the resumable Optuna study;
- :mod:`~r1probe.tuning.front`: the Pareto front, the choice and the report tables and figure;
- :mod:`~r1probe.tuning.plans`: the additive and CAST-conditional run-time plans compared with it;
- :mod:`~r1probe.tuning.run`: the whole run and the export.
"""

from r1probe.tuning.run import SearchResult, edit_search
from r1probe.tuning.settings import EditSearchSettings, search_settings

__all__ = ["EditSearchSettings", "SearchResult", "edit_search", "search_settings"]
