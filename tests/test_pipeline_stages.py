"""Stage plumbing of the study: where each bench's data is read from."""

from r1probe.pipeline.settings import load_settings
from r1probe.pipeline.stages import eval_plan


def test_chisafety_benches_follow_the_data_root_unless_their_own_folder_is_given(tmp_path):
    s = load_settings(env={}, flags={"eval": {"data_root": str(tmp_path)}})
    assert eval_plan(s, "chisafety-refusal")["data_root"] == str(tmp_path)
    assert eval_plan(s, "gsm8k")["data_root"] == str(tmp_path)
    s = load_settings(env={}, flags={"eval": {"data_root": str(tmp_path), "chisafety_root": str(tmp_path / "cs")}})
    assert eval_plan(s, "chisafety-refusal")["data_root"] == str(tmp_path / "cs")
    assert eval_plan(s, "gsm8k")["data_root"] == str(tmp_path)
    assert eval_plan(load_settings(env={}), "chisafety-refusal")["data_root"] is None
