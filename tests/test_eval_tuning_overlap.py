"""`r1probe eval` checks the tuning records it finds against the items it reports."""

from __future__ import annotations

import json

from r1probe.data import partitions as P
from test_eval_runner import write_xstest


def _run(capsys, argv):
    from r1probe.cli import main

    code = 0
    try:
        main(argv)
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


def _ids(root, part):
    return [i for i in P.partition_ids("xstest-safe", part, root=root)]


def test_tuning_on_a_report_item_makes_eval_refuse(tmp_path, tiny_qwen2, capsys):
    root = write_xstest(tmp_path / "data", 30)
    report, dev = _ids(root, "report"), _ids(root, "dev")
    assert report and dev
    bad = tmp_path / "bad"
    P.write_tuning_reads(bad, {"xstest-safe": [report[0]] + dev[:2]})
    argv = ["eval", "--model", str(tiny_qwen2), "--dtype", "float32", "--device", "cpu", "--bench", "xstest-safe",
            "--data-root", str(root), "--max-new-tokens", "2", "--out", str(tmp_path / "out")]
    code, out, err = _run(capsys, argv + ["--tuning-record", str(bad)])
    assert code == 2 and report[0] in err and "tuning/report overlap: 1 items" in err
    assert not (tmp_path / "out" / "xstest-safe.jsonl").exists()  # refused before any generation
    # a record of dev items only: the report runs and says so
    good = tmp_path / "good"
    P.write_tuning_reads(good, {"xstest-safe": dev})
    code, out, err = _run(capsys, argv + ["--tuning-record", str(good), "--limit", "3"])
    assert code in (0, None) and "tuning/report overlap: 0 items" in out
    recs = [json.loads(x) for x in (tmp_path / "out" / "xstest-safe.jsonl").read_text().splitlines()]
    assert recs and all(r["id"] in report for r in recs)


def test_the_evaluated_exports_manifest_is_checked(tmp_path, tiny_qwen2, capsys):
    import shutil

    root = write_xstest(tmp_path / "data", 30)
    report = _ids(root, "report")
    ckpt = tmp_path / "ckpt"
    shutil.copytree(tiny_qwen2, ckpt)
    (ckpt / "r1probe_manifest.json").write_text(json.dumps({"tuning_reads": {"xstest-safe": [report[1]]}}))
    code, out, err = _run(capsys, ["eval", "--model", str(ckpt), "--dtype", "float32", "--device", "cpu",
                                   "--bench", "xstest-safe", "--data-root", str(root), "--max-new-tokens", "2"])
    assert code == 2 and report[1] in err


def test_rank1_gate_fit_records_its_reads_in_the_export(tmp_path, tiny_lm, shared_data):
    """The rank1-gate fit data ids reach the exported checkpoint's manifest and tuning_reads.json."""
    import torch

    from r1probe.steering.directions import save_directions
    from r1probe.steering.edits import run_edit
    from r1probe.steering.export import export_checkpoint

    d = tmp_path / "dirs"
    d.mkdir()
    torch.manual_seed(0)
    save_directions(d / "directions.safetensors", {"chosen": torch.randn(tiny_lm.layout.d_model)}, {"chosen": "chosen"})
    P.write_tuning_reads(d, {"zh-harmful": ["zh-harmful/x"]})
    state = {k: v.clone() for k, v in tiny_lm.model.state_dict().items()}
    try:
        recs = run_edit("rank1-gate", tiny_lm, d / "directions.safetensors",
                        {"layer": 1, "lam": 1.0, "data_root": str(shared_data), "batch_size": 64}, log=lambda m: None)
        out = export_checkpoint(tiny_lm, tmp_path / "export", edits=recs, directions_file=str(d / "directions.safetensors"))
    finally:
        tiny_lm.model.load_state_dict(state)
    man = json.loads((out / "r1probe_manifest.json").read_text())
    reads = man["tuning_reads"]
    assert reads["gsm8k"][0].startswith("gsm8k-train/") and "zh-harmful/x" in reads["zh-harmful"]
    assert len(reads["zh-harmless"]) > 100 and all("tuning_reads" not in e for e in man["edits"])
    assert P.load_tuning_reads(out) == reads
    # the fit never read a report item of the zh-harmless bench (seed 0)
    assert not set(reads["zh-harmless"]) & set(P.partition_ids("zh-harmless", "report"))
