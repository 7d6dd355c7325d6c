"""Every bad-input case of ``docs/BAD_INPUT.md``: a non-zero exit, one line on stderr, nothing written.

Each case runs the real command line (``r1probe.cli.main``) in-process on the tiny random model. The
table in ``docs/BAD_INPUT.md`` is generated from :data:`CASES` by running this file as a script:
``python tests/test_bad_input.py docs/BAD_INPUT.md`` (the test checks that every case is in it).
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import sys
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[1] / "docs" / "BAD_INPUT.md"

#: (id, what is wrong, argv with {tiny} {d} {store} {probe} {file} placeholders, regex the error line matches)
CASES = [
    ("eval-unknown-bench", "an unknown benchmark name",
     "eval --model {tiny} --bench nope", r"unknown benchmark 'nope'; known: chisafety-refusal"),
    ("eval-user-bench-kind", "a user bench of an unknown kind",
     "eval --model {tiny} --bench file:{d}/small.jsonl:nope", r"unknown benchmark kind 'nope'"),
    ("eval-user-bench-form", "a user bench without its kind",
     "eval --model {tiny} --bench file:{d}/small.jsonl", r"file:PATH:KIND"),
    ("eval-user-bench-line", "a user bench file with a malformed line",
     "eval --model {tiny} --bench file:{d}/bad.jsonl:refusal", r"bad\.jsonl: line 2"),
    ("eval-user-bench-missing", "a user bench file that does not exist",
     "eval --model {tiny} --bench file:{d}/missing.jsonl:refusal", r"missing\.jsonl"),
    ("eval-user-bench-long", "a user bench with a prompt longer than the model's context",
     "eval --model {tiny} --bench file:{d}/big.jsonl:refusal", r"big\.jsonl: prompt 2: at least [\d,]+ tokens"),
    ("eval-out-unwritable", "an --out folder that cannot be created",
     "eval --model {tiny} --bench zh-harmless --limit 1 --out {file}/run", r"--out .*: .* is not a folder"),
    ("eval-openai-no-url", "--engine openai without --url",
     "eval --engine openai --bench zh-harmless", r"--engine openai needs --url"),
    ("eval-limit-type", "a non-integer --limit",
     "eval --bench zh-harmless --limit abc", r"Invalid value for '--limit'.*see 'r1probe eval --help'"),
    ("extract-1mb-prompt", "a 1 MB prompt (longer than the model's context)",
     "extract --model {tiny} --harmful {d}/big.jsonl --harmless {d}/small.jsonl --out {d}/acts-big",
     r"big\.jsonl: prompt 'big-00001' \(#2\): at least [\d,]+ tokens .* over the model's context of 256"),
    ("extract-empty-file", "an empty prompt file",
     "extract --model {tiny} --harmful {d}/empty.jsonl --out {d}/acts-empty", r"the prompt set is empty"),
    ("extract-no-prompts", "no prompt set at all",
     "extract --model {tiny} --out {d}/acts-none", r"no prompts: pass --harmful"),
    ("extract-bad-layer", "a layer the model does not have",
     "extract --model {tiny} --harmful {d}/small.jsonl --layers 99 --out {d}/acts-99", r"layer 99 out of range"),
    ("extract-out-unwritable", "an --out folder that cannot be created",
     "extract --model {tiny} --harmful {d}/small.jsonl --out {file}/acts", r"--out .*: .* is not a folder"),
    ("probe-empty-layers", "--layers the store does not hold (an empty selection)",
     "probe --store {store} --out {d}/probe-99 --layers 99 --no-select", r"--layers: the store has no layer 99"),
    ("probe-empty-positions", "--positions the store does not hold",
     "probe --store {store} --out {d}/probe-pos --positions -9 --no-select", r"--positions: the store has no position -9"),
    ("probe-bad-layers", "--layers that are not numbers",
     "probe --store {store} --out {d}/probe-x --layers x --no-select", r"--layers 'x': expected"),
    ("probe-out-unwritable", "an --out folder that cannot be created",
     "probe --store {store} --out {file}/probe --no-select", r"--out .*: .* is not a folder"),
    ("probe-no-store", "a store folder that does not exist",
     "probe --store {d}/nostore --out {d}/probe-ns", r"Invalid value for '--store'"),
    ("chat-long-prompt", "a prompt longer than the model's context",
     "chat --model {tiny} -p {long}", r"--prompt 1: (at least )?[\d,]+ tokens .* over the model's context of 256"),
    ("steer-long-prompt", "a prompt file with a prompt longer than the context",
     "steer --model {tiny} --directions {probe} --op add --layer 1 --alpha 1 --data {d}/big.jsonl",
     r"big\.jsonl: prompt 1: at least [\d,]+ tokens"),
    ("steer-no-prompt", "neither --prompt nor --data",
     "steer --model {tiny} --directions {probe} --op add --layer 1 --alpha 1", r"give --prompt TEXT or --data FILE"),
    ("steer-out-unwritable", "an --out file in a folder that cannot be created",
     "steer --model {tiny} --directions {probe} --op add --layer 1 --alpha 1 -p hi --out {file}/r.jsonl",
     r"--out .*: .* is not a folder"),
    ("edit-out-unwritable", "an --out folder that cannot be created",
     "edit --model {tiny} --directions {probe} --op orthogonalize --out {file}/export", r"--out .*: .* is not a folder"),
    ("edit-out-exists", "an existing --out without --overwrite",
     "edit --model {tiny} --directions {probe} --op orthogonalize --out {d}/existing", r"already exists \(pass --overwrite"),
    ("edit-measure-missing", "a --measure file that does not exist",
     "edit --directions {probe} --op orthogonalize --out {d}/export-m --measure {d}/missing.jsonl",
     r"Invalid value for '--measure'"),
    ("distill-out-unwritable", "an --out folder that cannot be created",
     "distill --student {tiny} --traces {d}/small.jsonl --out {file}/student", r"--out .*: .* is not a folder"),
    ("compare-out-unwritable", "an --out folder that cannot be created",
     "compare --base {tiny} --distilled {tiny} --out {file}/cmp", r"--out .*: .* is not a folder"),
    ("edit-search-out-unwritable", "an --out folder that cannot be created",
     "edit-search --model {tiny} --directions {probe} --out {file}/search", r"--out .*: .* is not a folder"),
    ("run-out-unwritable", "a study --out folder that cannot be created",
     "run --out {file}/study", r"--out .*: .* is not a folder"),
    ("models-show-missing", "a model folder that does not exist",
     "models show {d}/nomodel", r"nomodel: no such file or folder"),
]

#: server cases (``tests/test_eval_server.py`` runs them with the official ``openai`` client)
SERVER_CASES = [
    ("`model` other than the served name (chat, completions, models.retrieve)", "404", "The model \\`X\\` does not exist (this server serves \\`NAME\\`)."),
    ("`max_tokens` -5 or 0, or over the context", "400", "error `param: max_tokens`"),
    ("`temperature` \"hot\" or 9", "400", "error `param: temperature`"),
    ("`top_p` 0", "400", "error `param: top_p`"),
    ("`n` 0", "400", "error `param: n`"),
    ("a message of role \"wizard\", or no messages", "400", "error `param: messages`"),
    ("more than 4 `stop` strings", "400", "error `param: stop`"),
    ("`logprobs` true", "400", "`logprobs are not supported by r1probe serve`"),
    ("`echo`, `suffix`, `best_of` (completions)", "400", "`echo is not supported` (and so on)"),
    ("a body that is not JSON", "400", "error type `invalid_request_error`"),
    ("an unknown route or method", "404 / 405", "`no route POST /v1/x`"),
    ("no or a wrong `Authorization: Bearer KEY` with `--api-key`", "401", "`invalid or missing API key (Authorization: Bearer KEY)`"),
]


def make_inputs(d: Path, tiny: Path) -> dict:
    """The files the cases read, under ``d``; returns the placeholder values."""
    from r1probe.steering import save_directions

    import torch

    d.mkdir(parents=True, exist_ok=True)
    (d / "small.jsonl").write_text("".join(json.dumps({"prompt": f"hello {i}"}) + "\n" for i in range(4)))
    (d / "big.jsonl").write_text(json.dumps({"prompt": "ok"}) + "\n" + json.dumps({"prompt": "x" * (1 << 20)}) + "\n")
    (d / "bad.jsonl").write_text('{"prompt": "a"}\n{"prompt": \n')
    (d / "empty.jsonl").write_text("")
    (d / "a-file").write_text("not a folder\n")
    (d / "existing").mkdir(exist_ok=True)
    probe = d / "probe"
    save_directions(probe / "directions.safetensors", {"chosen": torch.randn(64, generator=torch.Generator().manual_seed(0))})
    store = d / "store"
    if not (store / "manifest.json").exists():
        code, _, err = run(["extract", "--model", str(tiny), "--dtype", "float32", "--harmful", str(d / "small.jsonl"),
                            "--harmless", str(d / "small.jsonl"), "--positions", "-1", "--out", str(store), "--quiet"])
        assert code == 0, err
    return {"tiny": str(tiny), "d": str(d), "store": str(store), "probe": str(probe), "file": str(d / "a-file"),
            "long": "x" * 5000}


def argv_of(template: str, values: dict) -> list[str]:
    return [part.format(**values) for part in template.split()]


def run(argv: list[str]) -> tuple[int, str, str]:
    """Run ``r1probe ARGV`` in-process: ``(exit code, stdout, stderr)``."""
    from r1probe.cli import main

    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(argv)
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
    return code, out.getvalue(), err.getvalue()


def _tree(d: Path) -> set[str]:
    return {str(p.relative_to(d)) for p in d.rglob("*")}


@pytest.fixture(scope="module")
def inputs(tiny_qwen2, tmp_path_factory):
    return make_inputs(tmp_path_factory.mktemp("bad"), tiny_qwen2)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_nonzero_and_writes_nothing(case, inputs):
    _, _, template, pattern = case
    d = Path(inputs["d"])
    before = _tree(d)
    code, out, err = run(argv_of(template, inputs) + (["--dtype", "float32"] if "{tiny}" in template else []))
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code != 0, (out, err)
    assert len(lines) == 1, err
    assert lines[0].startswith("r1probe: error: ") and re.search(pattern, lines[0]), lines[0]
    assert _tree(d) == before, sorted(_tree(d) - before)  # nothing written, not even a partial folder


def test_every_case_is_in_the_doc():
    text = DOC.read_text(encoding="utf-8")
    for case in CASES:
        assert f"`{case[0]}`" in text, case[0]
    for what, status, _ in SERVER_CASES:
        assert what in text


def _doc(values: dict, tiny: Path) -> str:
    d = values["d"]
    rows = []
    for cid, what, template, _ in CASES:
        argv = argv_of(template, values) + (["--dtype", "float32"] if "{tiny}" in template else [])
        code, _, err = run(argv)
        line = err.strip().splitlines()[0] if err.strip() else "(nothing)"
        shown = template.replace("{tiny}", "tiny").replace("{d}/", "").replace("{store}", "acts") \
            .replace("{probe}", "probe").replace("{file}", "a-file").replace("{long}", "\"xxxx…(5,000)\"")
        line = line.replace(d + "/", "").replace(str(tiny), "tiny").replace("|", "\\|")
        rows.append(f"| `{cid}` | {what} | `r1probe {shown}` | {code} | `{line}` |")
    server = [f"| {what} | {status} | {msg} |" for what, status, msg in SERVER_CASES]
    return "\n".join([
        "# Bad input and what r1probe prints",
        "",
        "Every case below exits non-zero with one line on stderr (`r1probe: error: ...`, exit 2) before any",
        "work that could leave a partial output: outputs are checked writable first, prompt files are read and",
        "prompt lengths checked against the model's context (`max_position_embeddings`) before generation or",
        "capture, and selections are checked against the activation store before fitting. `tests/test_bad_input.py`",
        "runs every row on a tiny random model and asserts the exit code, the single line and that nothing was",
        "written; this file is generated by `python tests/test_bad_input.py docs/BAD_INPUT.md`.",
        "In the commands, `tiny` is a small checkpoint folder (context 256 tokens), `acts` an activation store,",
        "`probe` a directions folder and `a-file` a regular file (so `a-file/x` cannot be created).",
        "",
        "Some inputs that used to fail now work: `r1probe eval --bench list` prints the bench table (name, kind,",
        "items, metrics, source, licence), `--help` names every registered bench, and `--bench file:PATH:KIND`",
        "evaluates a prompt file as a bench of that kind.",
        "",
        "| case | what is wrong | command | exit | the line printed |",
        "|---|---|---|---|---|",
        *rows,
        "",
        "## `r1probe serve`",
        "",
        "The server answers bad requests with an HTTP status and OpenAI's error shape",
        "`{\"error\": {\"message\", \"type\", \"param\", \"code\"}}` (type `invalid_request_error` for 400);",
        "`tests/test_eval_server.py` checks each with the official `openai` client.",
        "",
        "| request | status | error |",
        "|---|---|---|",
        *server,
        "",
    ])


if __name__ == "__main__":
    import tempfile

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from conftest import make_tiny

    with tempfile.TemporaryDirectory() as tmp:
        with contextlib.redirect_stdout(io.StringIO()):  # only the document goes to stdout
            tiny = make_tiny("qwen2", Path(tmp) / "tiny")
            values = make_inputs(Path(tmp) / "work", tiny)
            doc = _doc(values, tiny)
        Path(sys.argv[1]).write_text(doc, encoding="utf-8") if len(sys.argv) > 1 else sys.stdout.write(doc)
