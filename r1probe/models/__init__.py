"""Model specs, loading, layouts and chat templates."""

from r1probe.models.builtin import BUILTINS, DEFAULT_MODEL
from r1probe.models.chat import ChatFormatter, ReasoningSplit, split_reasoning, to_messages
from r1probe.models.layout import Layout, detect_layout
from r1probe.models.loader import LoadedModel, load_model, model_provenance
from r1probe.models.spec import ModelSpec, parse_spec

__all__ = ["BUILTINS", "DEFAULT_MODEL", "ChatFormatter", "ReasoningSplit", "split_reasoning", "to_messages",
           "Layout", "detect_layout", "LoadedModel", "load_model", "model_provenance", "ModelSpec", "parse_spec"]
