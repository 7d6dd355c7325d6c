import pytest

from r1probe.errors import SpecError
from r1probe.models.spec import parse_spec


def test_builtin_spec():
    s = parse_spec("builtin:qwen2.5-coder-0.5b-instruct")
    assert s.kind == "builtin" and s.target == "qwen2.5-coder-0.5b-instruct"


def test_unknown_builtin_names_known_ones():
    with pytest.raises(SpecError, match="qwen2.5-coder-0.5b-instruct"):
        parse_spec("builtin:nope")


def test_hub_id_keeps_revision():
    s = parse_spec("deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B", revision="abc")
    assert s.kind == "hub" and s.revision == "abc"


def test_local_folder_and_gguf(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    assert parse_spec(str(tmp_path)).kind == "dir"
    g = tmp_path / "m.gguf"
    g.write_bytes(b"x")
    assert parse_spec(str(g)).kind == "gguf"


@pytest.mark.parametrize("bad", ["./missing-folder", "/no/such/model.gguf", "missing.gguf", ""])
def test_missing_paths_are_clear_errors(bad):
    with pytest.raises(SpecError):
        parse_spec(bad)


def test_folder_without_config(tmp_path):
    with pytest.raises(SpecError, match="config.json"):
        parse_spec(str(tmp_path))
