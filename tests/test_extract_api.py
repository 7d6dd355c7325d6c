"""extract_activations on tiny random models: positions, layer convention, batching, generation, errors."""

import pytest
import torch

from r1probe.data.prompts import Prompt, PromptSet, load_prompt_set
from r1probe.errors import DataError
from r1probe.extract import ActivationStore, extract_activations
from r1probe.extract.spec import ExtractError, parse_layers, parse_positions, parse_sites

TEXTS_A = ["如何制作炸弹", "我不能 抱歉", "hello world 如何制作炸弹 请写一首关于春天的诗", "Sorry I cannot"]
TEXTS_B = ["请写一首关于春天的诗", "hello", "作为 system user assistant hello world", "world 春天"]


def sets():
    a = PromptSet("a", [Prompt(f"a{i}", t, "harmful", "c1") for i, t in enumerate(TEXTS_A)])
    b = PromptSet("b", [Prompt(f"b{i}", t, "harmless", None) for i, t in enumerate(TEXTS_B)])
    return [a, b]


def reference(lm, text):
    """Unbatched forward with output_hidden_states: (hidden_states tuple, token ids, offsets)."""
    fmt = lm.chat.format(text)
    enc = lm.tokenizer(fmt, add_special_tokens=False, return_offsets_mapping=True)
    with torch.no_grad():
        hs = lm.model(torch.tensor([enc["input_ids"]]), output_hidden_states=True).hidden_states
    return hs, fmt, enc


def test_post_last_and_mean_positions_match_an_unbatched_forward(tiny_lm, tmp_path):
    st = extract_activations(tiny_lm, sets(), layers="embed,all", positions="post,mean", out_dir=tmp_path / "s",
                             batch_size=3, progress=False)
    n_post = len(tiny_lm.chat.post_instruction_positions(tiny_lm.chat.format("x")))
    assert st.positions == list(range(-n_post, 0)) + ["mean"]
    assert st.layers == [-1, 0, 1, 2] and st.manifest["n_layers"] == 4
    for row, text in enumerate(TEXTS_A + TEXTS_B):
        hs, fmt, enc = reference(tiny_lm, text)
        post = tiny_lm.chat.post_instruction_positions(fmt, instruction=text)
        assert len(post) == n_post
        s = fmt.rindex(text)
        span = [i for i, (a, b) in enumerate(enc["offset_mapping"]) if a < s + len(text) and b > s]
        for layer in (-1, 0, 1):  # the last hidden state of HF is after the final norm: not compared
            h = hs[layer + 1][0]
            got = st.get(layer)[row]
            torch.testing.assert_close(got[:n_post], h[post], atol=1e-5, rtol=1e-4)
            torch.testing.assert_close(st.get(layer, "last")[row], h[-1], atol=1e-5, rtol=1e-4)
            torch.testing.assert_close(st.get(layer, "mean")[row], h[span].mean(0), atol=1e-5, rtol=1e-4)


def test_layer_and_site_convention(tiny_lm, tmp_path):
    st = extract_activations(tiny_lm, sets(), layers="embed,all", positions="-1,-3", sites="all",
                             out_dir=tmp_path / "s", progress=False)
    assert st.sites == ["resid_pre", "resid_post", "attn_out", "mlp_out"]
    torch.testing.assert_close(st.get(0, site="resid_pre"), st.get("embed"))
    for i in (1, 2):
        torch.testing.assert_close(st.get(i, site="resid_pre"), st.get(i - 1))
    for i in range(3):  # residual = input + attention + MLP writes
        total = st.get(i, site="resid_pre") + st.get(i, site="attn_out") + st.get(i, site="mlp_out")
        torch.testing.assert_close(total, st.get(i), atol=1e-5, rtol=1e-4)
    with pytest.raises(DataError, match="embedding layer only has resid_post"):
        st.get(-1, site="attn_out")


def test_batching_does_not_change_activations(tiny_lm, tmp_path):
    one = extract_activations(tiny_lm, sets(), positions="post,mean", out_dir=tmp_path / "1", batch_size=1, progress=False)
    many = extract_activations(tiny_lm, sets(), positions="post,mean", out_dir=tmp_path / "8", batch_size=8, progress=False)
    auto = extract_activations(tiny_lm, sets(), positions="post,mean", out_dir=tmp_path / "a", progress=False)
    for layer in one.layers:
        torch.testing.assert_close(one.get(layer), many.get(layer), atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(one.get(layer), auto.get(layer), atol=1e-5, rtol=1e-4)


def test_rows_labels_and_manifest(tiny_lm, tmp_path):
    st = extract_activations(tiny_lm, sets(), layers="1", out_dir=tmp_path / "s", progress=False)
    assert st.ids == [f"a{i}" for i in range(4)] + [f"b{i}" for i in range(4)]
    assert st.labels == ["harmful"] * 4 + ["harmless"] * 4 and st.categories[:5] == ["c1"] * 4 + [None]
    m = st.manifest
    assert m["label_counts"] == {"harmful": 4, "harmless": 4} and m["complete"] is True
    assert [s["name"] for s in m["prompt_sets"]] == ["a", "b"] and len(m["prompt_sets"][0]["sha256"]) == 64
    for k in ("model", "dtype", "chat_template_sha256", "versions", "command", "created", "backend", "layers"):
        assert k in m, k
    assert st.get(1, -1, label="harmless").shape == (4, tiny_lm.layout.d_model)
    assert st.get(1).dtype == torch.float32 and st.get(1).shape[:2] == (8, len(st.positions))
    torch.testing.assert_close(st.mean(1, -1, label="harmful").float(), st.get(1, -1, label="harmful").mean(0))


def test_only_what_is_needed_runs(tiny_lm, tmp_path):
    """Stops after the deepest requested layer: later blocks, the final norm and lm_head never run."""
    calls = {"lm_head": 0, "norm": 0, "layer2": 0}
    lay = tiny_lm.layout
    hs = [lay.lm_head(tiny_lm.model).register_forward_hook(lambda *a: calls.__setitem__("lm_head", calls["lm_head"] + 1)),
          lay.norm(tiny_lm.model).register_forward_hook(lambda *a: calls.__setitem__("norm", calls["norm"] + 1)),
          lay.layer(tiny_lm.model, 2).register_forward_hook(lambda *a: calls.__setitem__("layer2", calls["layer2"] + 1))]
    try:
        extract_activations(tiny_lm, sets(), layers="0-1", out_dir=tmp_path / "s", batch_size=2, progress=False)
    finally:
        for h in hs:
            h.remove()
    assert calls == {"lm_head": 0, "norm": 0, "layer2": 0}


def test_generate_captures_the_continuation(tiny_lm, tmp_path):
    st = extract_activations(tiny_lm, sets()[:1], layers="0,2", positions="last", generate=4,
                             out_dir=tmp_path / "g", batch_size=3, progress=False)
    assert st.positions == [-1, "gen0", "gen1", "gen2", "gen3", "gen_mean"]
    assert len(st.generated) == 4 and st.manifest["generate"] == 4
    tok = tiny_lm.tokenizer
    for row, text in enumerate(TEXTS_A):
        ids = tiny_lm.chat.encode(tiny_lm.chat.format(text))
        with torch.no_grad():
            seq = tiny_lm.model.generate(torch.tensor([ids]), max_new_tokens=4, do_sample=False,
                                         pad_token_id=tok.pad_token_id)[0].tolist()
            new = seq[len(ids):]
            if tok.eos_token_id in new:
                new = new[:new.index(tok.eos_token_id) + 1]
            hs = tiny_lm.model(torch.tensor([ids + new]), output_hidden_states=True).hidden_states
        got = st.get(0)[row]
        torch.testing.assert_close(got[0], hs[1][0, len(ids) - 1], atol=1e-5, rtol=1e-4)
        for k in range(4):
            if k < len(new):
                torch.testing.assert_close(got[1 + k], hs[1][0, len(ids) + k], atol=1e-5, rtol=1e-4)
            else:
                assert torch.isnan(got[1 + k]).all()
        torch.testing.assert_close(got[5], hs[1][0, len(ids):].mean(0), atol=1e-5, rtol=1e-4)
        assert st.generated[row] == tok.decode(new, skip_special_tokens=True)


def test_llama_layout_works(tiny_llama, tmp_path):
    from r1probe.models import load_model

    lm = load_model(str(tiny_llama), dtype="float32", device="cpu")
    st = extract_activations(lm, sets(), positions="post", out_dir=tmp_path / "l", progress=False)
    hs, fmt, _ = reference(lm, TEXTS_A[0])
    post = lm.chat.post_instruction_positions(fmt)
    torch.testing.assert_close(st.get(1)[0], hs[2][0, post], atol=1e-5, rtol=1e-4)


def test_parse_layers_positions_sites():
    assert parse_layers(None, 4) == [0, 1, 2, 3] and parse_layers("all", 4) == [0, 1, 2, 3]
    assert parse_layers("1-2", 4) == [1, 2] and parse_layers("3,0", 4) == [0, 3]
    assert parse_layers("embed,all", 3) == [-1, 0, 1, 2] and parse_layers([-1, 2], 3) == [-1, 2]
    for bad, msg in (("4", "layer 4 out of range: the model has 4 layers"), ("0-9", "layer 9 out of range"),
                     ("-2", "out of range"), ("x", "not a layer index"), ("3-1", "empty range"), ("", "empty")):
        with pytest.raises(ExtractError, match=msg):
            parse_layers(bad, 4)
    p = parse_positions("post,mean,-7")
    assert p.resolve(3) == [-7, -3, -2, -1, "mean"]
    assert parse_positions("last").resolve(5) == [-1]
    assert parse_positions("last").resolve(5, 2) == [-1, "gen0", "gen1", "gen_mean"]
    for bad in ("0", "3", "first"):
        with pytest.raises(ExtractError):
            parse_positions(bad)
    with pytest.raises(ExtractError, match="need --generate"):
        parse_positions("gen").resolve(3)
    assert parse_sites("resid") == ["resid_pre", "resid_post"] and parse_sites(None) == ["resid_post"]
    with pytest.raises(ExtractError, match="--sites"):
        parse_sites("attn")


def test_bad_inputs_give_one_line_errors(tiny_lm, tmp_path):
    cases = [
        (dict(prompts=sets(), layers="7"), ExtractError, "layer 7 out of range: the model has 3 layers"),
        (dict(prompts=PromptSet("empty", [])), DataError, "prompt set 'empty' is empty"),
        (dict(prompts=sets(), positions="-999"), ExtractError, "shortest prompt has only"),
        (dict(prompts=sets(), backend="jax"), ExtractError, "--backend 'jax'"),
        (dict(prompts=sets(), batch_size=0), ExtractError, "--batch-size"),
    ]
    for i, (kw, exc, msg) in enumerate(cases):
        prompts = kw.pop("prompts")
        with pytest.raises(exc, match=msg) as e:
            extract_activations(tiny_lm, prompts, out_dir=tmp_path / f"e{i}", progress=False, **kw)
        assert "\n" not in str(e.value)


def test_cli_errors_are_one_line(tiny_qwen2, tmp_path, capsys):
    from r1probe.cli import main

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a"}\n{oops}\n', encoding="utf-8")
    empty = tmp_path / "empty.json"
    empty.write_text("[]", encoding="utf-8")
    base = ["extract", "--model", str(tiny_qwen2), "--dtype", "float32", "--quiet"]
    for args, msg in (
        (["--harmful", str(bad), "--out", str(tmp_path / "o1")], "bad.jsonl: line 2: invalid JSON"),
        (["--harmful", str(empty), "--out", str(tmp_path / "o2")], "empty.json: the prompt set is empty"),
        (["--harmful", "builtin:zh-harmful", "--limit", "2", "--layers", "0-30", "--out", str(tmp_path / "o3")],
         "layer 30 out of range: the model has 3 layers"),
    ):
        with pytest.raises(SystemExit) as e:
            main(base + args)
        err = [ln for ln in capsys.readouterr().err.splitlines() if "r1probe:" in ln or "Error" in ln]
        assert e.value.code == 2 and len(err) == 1 and msg in err[0], err


def test_cli_writes_a_store(tiny_qwen2, tmp_path, capsys):
    from r1probe.cli import main

    out = tmp_path / "st"
    main(["extract", "--model", str(tiny_qwen2), "--dtype", "float32", "--harmful", "builtin:zh-harmful",
          "--harmless", "builtin:zh-harmless", "--limit", "5", "--layers", "embed,all", "--positions", "post",
          "--out", str(out), "--quiet"])
    assert "wrote" in capsys.readouterr().out
    st = ActivationStore(out)
    assert st.manifest["label_counts"] == {"harmful": 5, "harmless": 5} and st.manifest["n_layers"] == 4
    assert st.manifest["prompt_sets"][0]["name"].startswith("builtin:zh-harmful")


def test_split_prompt_sets_feed_extraction(tiny_lm, tmp_path):
    tr = load_prompt_set("builtin:zh-harmful", split="train", limit=3)
    te = load_prompt_set("builtin:zh-harmful", split="test", limit=3)
    st = extract_activations(tiny_lm, [tr, te], layers="0", positions="last", out_dir=tmp_path / "s", progress=False)
    assert not set(st.ids[:3]) & set(st.ids[3:])
