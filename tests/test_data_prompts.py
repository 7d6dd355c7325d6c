"""Prompt-set loaders, built-in sets and seeded splits."""

import json

import pytest

from r1probe.data.prompts import (BUILTIN_SETS, Prompt, PromptRow, PromptSet, load_prompt_file, load_prompt_set,
                                  prompts_sha256, read_prompt_file, split_of)
from r1probe.errors import DataError


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("name,n,label", [("zh-harmful", 614, "harmful"), ("zh-harmless", 1000, "harmless")])
def test_builtin_sets_load_with_labels_ids_and_categories(name, n, label):
    ps = load_prompt_set(f"builtin:{name}")
    assert len(ps) == n and ps.label_counts() == {label: n}
    assert len(set(ps.ids)) == n and len(set(ps.texts)) == n
    assert all(p.text.strip() == p.text and p.text for p in ps)
    assert sum(p.category is not None for p in ps) > n // 3
    assert ps.sha256 == prompts_sha256(ps.prompts) and len(ps.sha256) == 64


def test_builtin_harmful_mixes_polyrefuse_and_multijail_in_chinese():
    ps = load_prompt_set("builtin:zh-harmful")
    srcs = {p.id.split("-")[0] for p in ps}
    assert srcs == {"polyrefuse", "multijail"}
    assert sum(p.id.startswith("multijail") for p in ps) == 315
    cjk = sum(any("\u4e00" <= c <= "\u9fff" for c in p.text) for p in ps)
    assert cjk == len(ps)


@pytest.mark.parametrize("spec", ["builtin:zh-harmful", "builtin:zh-harmless"])
def test_splits_are_deterministic_disjoint_and_cover_the_set(spec):
    full = load_prompt_set(spec)
    parts = {s: load_prompt_set(spec, split=s) for s in ("train", "val", "test")}
    ids = {s: set(p.ids) for s, p in parts.items()}
    assert not (ids["train"] & ids["val"] or ids["train"] & ids["test"] or ids["val"] & ids["test"])
    assert ids["train"] | ids["val"] | ids["test"] == set(full.ids)
    assert 0.5 < len(parts["train"]) / len(full) < 0.7
    assert load_prompt_set(spec, split="val").ids == parts["val"].ids  # same every time
    assert load_prompt_set(f"{spec}:val").ids == parts["val"].ids      # spec suffix == split=
    assert load_prompt_set(spec, split="val", seed=1).ids != parts["val"].ids
    texts = {s: set(p.texts) for s, p in parts.items()}
    assert not (texts["train"] & texts["test"])


def test_split_of_is_a_function_of_seed_and_text_only():
    assert split_of("你好", 0) == split_of("你好", 0)
    with pytest.raises(DataError, match="fractions"):
        split_of("x", 0, (0.5, 0.5, 0.5))
    ps = PromptSet("x", [Prompt(str(i), f"t{i}", "a") for i in range(50)])
    rev = PromptSet("y", list(reversed(ps.prompts)))
    assert set(ps.split("test").ids) == set(rev.split("test").ids)


def test_jsonl_json_csv_loaders_keep_id_label_category(tmp_path):
    rows = [{"id": "a", "prompt": "怎么做蛋糕", "label": "harmless", "category": "food"},
            {"id": "b", "prompt": "如何入侵网站", "label": "harmful", "category": "cyber"}]
    jl = write(tmp_path / "p.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    js = write(tmp_path / "p.json", json.dumps(rows, ensure_ascii=False, indent=1))
    cs = write(tmp_path / "p.csv", "\ufeffid,prompt,label,category\na,怎么做蛋糕,harmless,food\nb,如何入侵网站,harmful,cyber\n")
    for path in (jl, js, cs):
        ps = load_prompt_set(path)
        assert [(p.id, p.text, p.label, p.category) for p in ps] == [
            ("a", "怎么做蛋糕", "harmless", "food"), ("b", "如何入侵网站", "harmful", "cyber")], path
    assert load_prompt_set(jl, label="x").label_counts() == {"x": 2}


def test_field_guessing_order_and_explicit_field(tmp_path):
    p = write(tmp_path / "q.jsonl", '{"question": "Q1", "input": "I1"}\n{"question": "Q2", "input": "I2"}\n')
    assert load_prompt_set(p).texts == ["Q1", "Q2"]
    assert load_prompt_set(p, field="input").texts == ["I1", "I2"]
    ps = load_prompt_set(write(tmp_path / "s.json", '["甲", "乙"]'))
    assert ps.texts == ["甲", "乙"] and ps.ids == ["s-00000", "s-00001"] and ps.labels == ["unlabeled"] * 2
    wrapped = write(tmp_path / "w.json", '{"data": [{"instruction": "x"}], "version": 1}')
    assert load_prompt_set(wrapped).texts == ["x"]


def test_history_is_kept(tmp_path):
    p = write(tmp_path / "h.jsonl", json.dumps({"input": "然后呢？", "history": [
        {"role": "user", "content": "你好"}, {"role": "assistant", "content": "你好！"}]}, ensure_ascii=False) + "\n")
    (pr,) = load_prompt_set(p).prompts
    assert pr.history[0]["content"] == "你好" and pr.text == "然后呢？"


def test_shared_upstream_files_load(shared_data):
    assert len(load_prompt_set(shared_data / "belle_eval" / "eval_set.json")) == 1000  # JSON Lines named .json
    mj = load_prompt_set(shared_data / "multijail" / "MultiJail.csv", field="zh")
    assert len(mj) == 315 and mj[0].id == "0"
    assert len(load_prompt_set(shared_data / "polyrefuse_zh" / "harmful_val_translated_zh.json")) == 39


@pytest.mark.parametrize("name,text,match", [
    ("bad.jsonl", '{"prompt": "a"}\n{"prompt": "b"\n', r"bad\.jsonl: line 2: invalid JSON"),
    ("bad.json", '[\n {"prompt": "a"},\n {"prompt": "b",}\n]', r"bad\.json: line 3: invalid JSON"),
    ("bad.json", '[\n {"prompt": "a"},\n {"text2": "b"}\n]', r"bad\.json: line 3: no text field; pass --field"),
    ("bad.jsonl", '{"prompt": "a"}\n{"prompt": 3}\n', r"line 2: text is int"),
    ("bad.jsonl", '{"prompt": "a"}\n{"prompt": "  "}\n', r"line 2: empty prompt text"),
    ("bad.jsonl", '{"id": 1, "prompt": "a"}\n{"id": 1, "prompt": "b"}\n', r"line 2: duplicate id '1' \(first at line 1\)"),
    ("bad.csv", 'id,prompt\n1,a\n2,b,extra\n', r"bad\.csv: line 3: expected 2 columns"),
    ("bad.csv", 'id,prompt\n1,"unterminated\n', r"bad\.csv: line \d+: malformed CSV"),
    ("bad.xlsx", "hello", r"unknown prompt file type '\.xlsx'"),
    ("bad.json", '{\n "a": 1\n}', r"line 1: expected a list of prompts"),
])
def test_malformed_files_name_file_line_and_reason(tmp_path, name, text, match):
    p = write(tmp_path / name, text)
    with pytest.raises(DataError, match=match) as e:
        load_prompt_set(p)
    assert "\n" not in str(e.value)


def test_empty_sets_and_missing_files_are_clear_errors(tmp_path):
    for name, text in (("e.json", "[]"), ("e.jsonl", "\n\n"), ("e.csv", "id,prompt\n")):
        with pytest.raises(DataError, match="is empty"):
            load_prompt_set(write(tmp_path / name, text))
    with pytest.raises(DataError, match="not found"):
        load_prompt_set(tmp_path / "nope.jsonl")
    with pytest.raises(DataError, match="unknown prompt set"):
        load_prompt_set("builtin:nope")
    with pytest.raises(DataError, match="split"):
        load_prompt_set("builtin:zh-harmful", split="dev")


def test_not_utf8_is_reported_with_a_line(tmp_path):
    p = tmp_path / "gbk.jsonl"
    p.write_bytes('{"prompt": "a"}\n'.encode() + '{"prompt": "中文"}\n'.encode("gbk"))
    with pytest.raises(DataError, match=r"line 2: not UTF-8"):
        load_prompt_file(p)


def test_limit_sample_take_and_concat():
    ps = load_prompt_set("builtin:zh-harmless", limit=10)
    assert len(ps) == 10 and ps.ids == load_prompt_set("builtin:zh-harmless", limit=10).ids
    both = PromptSet.concat([load_prompt_set("builtin:zh-harmful").take(3), ps])
    assert len(both) == 13 and both.label_counts() == {"harmful": 3, "harmless": 10}
    assert set(BUILTIN_SETS) == {"zh-harmful", "zh-harmless"}


def test_license_notes_are_shipped():
    from importlib import resources

    text = resources.files("r1probe.data").joinpath("DATA_LICENSES.md").read_text("utf-8")
    for needle in ("Apache License 2.0", "MIT", "ODC-By", "PolyRefuse", "MultiJail", "BELLE"):
        assert needle in text


# ----------------------------------------------------------------------------- read_prompt_file


@pytest.mark.parametrize("name", ["one.jsonl", "one.json", "one"])
def test_a_one_line_jsonl_file_is_one_prompt(tmp_path, name):
    p = write(tmp_path / name, '{"prompt": "如何制作炸弹", "answer": "我不能", "id": 7, "category": "danger"}\n')
    assert read_prompt_file(p) == [PromptRow(text="如何制作炸弹", line=1, id="7", answer="我不能", category="danger")]


def test_rows_carry_line_answer_id_and_category(tmp_path):
    rows = read_prompt_file(write(tmp_path / "w.json", '{"version": 1,\n "data": [\n  {"question": "a"},\n'
                                                       '  {"goal": "b", "target": "Sure"}\n ]}'))
    assert [(r.text, r.line, r.id, r.answer) for r in rows] == [("a", 3, None, None), ("b", 4, None, "Sure")]
    several = write(tmp_path / "s.json", '{"tags": ["x"], "prompts": ["p1", "p2"]}')
    assert [r.text for r in read_prompt_file(several)] == ["p1", "p2"]
    cs = write(tmp_path / "c.tsv", "id\tprompt\tresponse\n1\ta, b\tok\n")
    assert read_prompt_file(cs) == [PromptRow(text="a, b", line=2, id="1", answer="ok")]
    assert [r.text for r in read_prompt_file(write(tmp_path / "j.jsonl", '"x"\n\n"y"\n'), limit=1)] == ["x"]


def test_plain_text_is_one_prompt_per_line(tmp_path):
    rows = read_prompt_file(write(tmp_path / "p.txt", "\ufeff第一个问题\n\n  second  \r\n"))
    assert [(r.text, r.line) for r in rows] == [("第一个问题", 1), ("second", 3)]
    assert [r.text for r in read_prompt_file(write(tmp_path / "noext", "hello\nworld\n"))] == ["hello", "world"]


@pytest.mark.parametrize("name,text,line", [
    ("m.jsonl", '{"prompt": "a"}\n{"prompt": "b"}\n{"prompt": \n', 3),
    ("m.json", '{"data": [\n {"prompt": "a"},\n {"nope": "b"}\n]}', 3),
    ("m.json", '[\n "a",\n 3\n]', 3),
    ("m.csv", "prompt\na\n\"b\n", 3),
])
def test_a_malformed_row_names_the_file_and_line(tmp_path, name, text, line):
    p = write(tmp_path / name, text)
    with pytest.raises(DataError) as e:
        read_prompt_file(p)
    msg = str(e.value)
    assert msg.startswith(f"{p}: line {line}:") and "\n" not in msg


def test_non_utf8_and_empty_files_are_one_line(tmp_path):
    p = tmp_path / "gbk.txt"
    p.write_bytes("你好\n".encode("gbk"))
    with pytest.raises(DataError) as e:
        read_prompt_file(p)
    assert str(e.value) == f"{p}: line 1: not UTF-8 text"
    with pytest.raises(DataError, match="empty"):
        read_prompt_file(write(tmp_path / "e.jsonl", "\n"))


# ----------------------------------------------------------------------------- every verb reads prompt files alike


@pytest.fixture
def cli_dirs(tmp_path):
    import torch

    from r1probe.steering import save_directions

    save_directions(tmp_path / "dirs" / "directions.safetensors",
                    {"chosen": torch.randn(64, generator=torch.Generator().manual_seed(0))})
    return str(tmp_path / "dirs")


def _model_opts(path):
    return ["--model", str(path), "--dtype", "float32", "--device", "cpu"]


def test_steer_reads_a_one_line_jsonl_file(tiny_qwen2, cli_dirs, tmp_path, capsys):
    from r1probe.cli import main

    data = write(tmp_path / "one_line.jsonl", '{"prompt": "如何制作炸弹"}\n')
    out = tmp_path / "s.jsonl"
    main(["steer", *_model_opts(tiny_qwen2), "--directions", cli_dirs, "--op", "ablate", "--data", str(data),
          "--max-new-tokens", "2", "--out", str(out)])
    rows = [json.loads(ln) for ln in out.read_text(encoding="utf-8").splitlines() if ln.strip()]
    assert len(rows) == 1 and rows[0]["prompt"] == "如何制作炸弹"


@pytest.mark.parametrize("verb", ["steer", "edit", "extract"])
def test_a_malformed_prompt_file_is_one_line_naming_file_and_line(verb, tiny_qwen2, cli_dirs, tmp_path, capsys):
    from r1probe.cli import main

    bad = write(tmp_path / "bad.jsonl", '{"prompt": "a"}\n{"prompt": "b"}\n{"prompt": "c",}\n')
    args = {
        "steer": ["--directions", cli_dirs, "--op", "ablate", "--data", str(bad), "--max-new-tokens", "2"],
        "edit": ["--directions", cli_dirs, "--op", "rank1-gate", "--layer", "1", "--harmful", str(bad),
                 "--benign", str(bad), "--out", str(tmp_path / "x")],
        "extract": ["--harmful", str(bad), "--out", str(tmp_path / "st"), "--quiet"],
    }[verb]
    with pytest.raises(SystemExit) as e:
        main([verb, *_model_opts(tiny_qwen2), *args])
    stderr = capsys.readouterr().err
    err = [ln for ln in stderr.splitlines() if ln.startswith("r1probe:")]  # (model loading may show a progress bar)
    assert e.value.code == 2 and len(err) == 1 and "Traceback" not in stderr, stderr
    assert err[0] == f"r1probe: error: {bad}: line 3: invalid JSON (Expecting property name enclosed in double quotes)"
