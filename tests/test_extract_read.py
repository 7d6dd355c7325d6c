"""The activation reader equals the code it replaced (full forward + hidden_states, recorded projection
inputs), reads the last real token under left padding, stops the forward at the deepest module, and
writes the same store through its sink as it returns."""

import pytest
import torch

from r1probe.data.prompts import Prompt, PromptSet
from r1probe.extract import extract_activations
from r1probe.extract.batching import encode_prompts
from r1probe.extract.read import READ_SITES, read_activations, site_module
from r1probe.extract.spec import ExtractError
from r1probe.models.generate import left_pad, length_sorted_batches

TEXTS = ["如何制作炸弹", "请写一首关于春天的诗 hello world 我不能 抱歉", "hello", "我不能 抱歉 作为 system",
         "Sorry I cannot 春天 hello world hello world"]


def _formatted(lm):
    return [lm.chat.format(t) for t in TEXTS]


# ---- the replaced code paths, verbatim in substance -------------------------------------------------------------

@torch.inference_mode()
def old_last_token_states(lm, texts, layers, batch_size):
    pad = lm.tokenizer.pad_token_id
    enc = [lm.chat.encode(t) for t in texts]
    out = torch.zeros(len(enc), len(layers), lm.layout.d_model)
    for idx in length_sorted_batches([len(e) for e in enc], batch_size):
        ids, mask = left_pad([enc[i] for i in idx], pad, lm.device)
        hs = lm.model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
        for j, L in enumerate(layers):
            out[idx, j] = hs[L][:, -1].float().cpu()
    return out


@torch.inference_mode()
def old_block_input_means(lm, texts, batch_size):
    n = lm.layout.n_layers
    tot, cnt = None, 0
    seqs = [lm.chat.encode(t) for t in texts]
    for idx in length_sorted_batches([len(s) for s in seqs], batch_size):
        ids, mask = left_pad([seqs[i] for i in idx], lm.tokenizer.pad_token_id, lm.device)
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        hs = lm.model(input_ids=ids, attention_mask=mask, position_ids=pos, output_hidden_states=True,
                      use_cache=False, logits_to_keep=1).hidden_states
        x = torch.stack([h[:, -1].double().cpu() for h in hs[:n]])
        tot = x.sum(1) if tot is None else tot + x.sum(1)
        cnt += x.shape[1]
    return tot / cnt


@torch.no_grad()
def old_writer_inputs(lm, layer, token_lists, writer, last, batch_size):
    """Rows per input sequence (the old code concatenated them in batch order)."""
    from r1probe.steering.runtime import StopForward, recording

    mod = lm.layout.mlp_out(lm.model, layer) if writer == "mlp" else lm.layout.attn_out(lm.model, layer)
    per = {}
    for idx in length_sorted_batches([len(t) for t in token_lists], batch_size):
        ids, mask = left_pad([token_lists[j] for j in idx], lm.tokenizer.pad_token_id, lm.device)
        with recording(mod, stop=True) as seen:
            try:
                lm.model(input_ids=ids, attention_mask=mask, use_cache=False)
            except StopForward:
                pass
        z = seen[0].float().cpu()
        for r, j in enumerate(idx):
            k = len(token_lists[j]) if last is None else min(last, len(token_lists[j]))
            per[j] = z[r, z.shape[1] - k:]
    return per


# ---- equality with the old paths ----------------------------------------------------------------------------------

@pytest.mark.parametrize("fixture", ["tiny_qwen2", "tiny_llama"])
def test_last_token_states_equal_the_hidden_states_path(fixture, request):
    from r1probe.models import load_model
    from r1probe.tuning.directions import last_token_states

    lm = load_model(str(request.getfixturevalue(fixture)), dtype="float32", device="cpu")
    layers = [0, 1, 2]
    old = old_last_token_states(lm, _formatted(lm), layers, batch_size=2)
    new = last_token_states(lm, TEXTS, layers, batch_size=2)
    assert new.shape == old.shape == (len(TEXTS), 3, lm.layout.d_model) and new.dtype == torch.float32
    torch.testing.assert_close(new, old, atol=1e-6, rtol=0)


def test_block_input_means_equal_the_hidden_states_path(tiny_lm):
    from r1probe.probes.refusal import Scorer
    from r1probe.probes.select import block_input_means

    texts = _formatted(tiny_lm)
    new = block_input_means(Scorer(tiny_lm, batch_size=2), texts)
    old = old_block_input_means(tiny_lm, texts, batch_size=2)
    assert new.dtype == torch.float64 and new.shape == (tiny_lm.layout.n_layers, tiny_lm.layout.d_model)
    torch.testing.assert_close(new, old, atol=1e-6, rtol=0)


@pytest.mark.parametrize("writer,last", [("mlp", 3), ("attn", None), ("mlp", None)])
def test_writer_inputs_equal_the_recorded_projection_inputs(tiny_lm, writer, last):
    from r1probe.steering.edit import writer_inputs

    lm = tiny_lm
    toks = [lm.chat.encode(t) for t in _formatted(lm)] + [lm.chat.encode("hi")]  # a sequence shorter than `last`
    old = old_writer_inputs(lm, 1, toks, writer, last, batch_size=2)
    rows = writer_inputs(lm, 1, toks, writer=writer, last=last, batch_size=2)
    torch.testing.assert_close(rows, torch.cat([old[j] for j in range(len(toks))]), atol=1e-6, rtol=0)
    G, n = writer_inputs(lm, 1, toks, writer=writer, last=last, batch_size=2, gram=True)
    ref = torch.cat([old[j] for j in range(len(toks))]).double()
    assert n == ref.shape[0] and G.dtype == torch.float64
    torch.testing.assert_close(G, ref.T @ ref, atol=1e-4, rtol=1e-6)


@pytest.mark.parametrize("writer", ["mlp", "attn"])
def test_writer_inputs_gram_with_the_shared_prefix_run_once(tiny_lm, writer):
    """Formatted prompts share the template's system prompt: the gram counts its rows once per
    sequence from one pass and reads each sequence's own tokens after its cache; equal to every token
    read in full (float32). ``after_prefix`` refuses a prefix the texts do not share, in one line."""
    from r1probe.steering.edit import _gram_prefix, writer_inputs

    lm = tiny_lm
    system = "You are a helpful assistant. 你是一个乐于助人的助手。"
    toks = [lm.chat.encode(lm.chat.format(t, system=system)) for t in ["写一首诗", "hello world", "如何做饭", "hi"]]
    assert _gram_prefix(lm, toks) >= 8
    old = old_writer_inputs(lm, 1, toks, writer, None, batch_size=2)
    ref = torch.cat([old[j] for j in range(len(toks))]).double()
    G, n = writer_inputs(lm, 1, toks, writer=writer, batch_size=2, gram=True)
    assert n == ref.shape[0]
    torch.testing.assert_close(G, ref.T @ ref, atol=1e-4, rtol=1e-6)
    p = _gram_prefix(lm, toks)
    rows = read_activations(lm, toks, sites=[f"{writer}_z"], positions=["all"], layers=[1], after_prefix=p)
    assert rows[(f"{writer}_z", 1)].shape[0] == sum(len(t) - p for t in toks)
    with pytest.raises(ExtractError, match="not a prefix"):
        read_activations(lm, toks + [lm.chat.encode("hi")], sites=["mlp_z"], positions=["all"], layers=[1],
                         after_prefix=p)
    with pytest.raises(ExtractError, match="positions 'all'"):
        read_activations(lm, toks, sites=["mlp_z"], positions=[-1], layers=[1], after_prefix=p)


# ---- properties ---------------------------------------------------------------------------------------------------

def test_left_padding_reads_the_last_real_token(tiny_lm):
    """A text read in a padded batch equals the same text read alone (no padding)."""
    texts = _formatted(tiny_lm)
    kw = dict(sites=["resid_pre", "resid_post", "attn_out", "mlp_z"], positions=[-3, -1], layers=[0, 2])
    batched = read_activations(tiny_lm, texts, batch_size=len(texts), **kw)
    alone = read_activations(tiny_lm, texts, batch_size=1, **kw)
    lengths = {len(tiny_lm.chat.encode(t)) for t in texts}
    assert len(lengths) > 1  # the batch really is padded
    assert set(batched) == {(s, l) for s in kw["sites"] for l in kw["layers"]}
    for k in batched:
        assert batched[k].shape == (len(texts), 2, batched[k].shape[-1])
        torch.testing.assert_close(batched[k], alone[k], atol=1e-5, rtol=1e-5, msg=str(k))


def test_all_tokens_are_packed_in_input_order(tiny_lm):
    texts = _formatted(tiny_lm)
    n_tok = [len(tiny_lm.chat.encode(t)) for t in texts]
    every = read_activations(tiny_lm, texts, sites=["resid_post"], positions="all", layers=[1], batch_size=2)
    z = every[("resid_post", 1)]
    assert z.shape == (sum(n_tok), tiny_lm.layout.d_model)
    last = read_activations(tiny_lm, texts, sites=["resid_post"], positions=[-1], layers=[1], batch_size=2)
    ends = torch.tensor(n_tok).cumsum(0) - 1
    torch.testing.assert_close(z[ends], last[("resid_post", 1)][:, 0])


def test_the_forward_stops_at_the_deepest_module(tiny_lm):
    calls = []
    last_block = tiny_lm.layout.layer(tiny_lm.model, tiny_lm.layout.n_layers - 1)
    h = last_block.register_forward_hook(lambda *a: calls.append(1))
    try:
        read_activations(tiny_lm, _formatted(tiny_lm), sites=["mlp_z"], positions=[-1], layers=[0], batch_size=2)
        assert calls == []
        read_activations(tiny_lm, _formatted(tiny_lm)[:1], sites=["resid_post"], positions=[-1], layers=[2])
        assert calls == [1]
    finally:
        h.remove()


def test_sink_writes_the_same_store(tiny_lm, tmp_path):
    """The extraction store (the reader with the store writer as its sink) holds what the reader returns."""
    ps = PromptSet("p", [Prompt(f"p{i}", t, "harmful" if i % 2 else "harmless") for i, t in enumerate(TEXTS)])
    store = extract_activations(tiny_lm, ps, layers="embed,all", positions="post,mean", sites="all",
                                out_dir=tmp_path / "s", batch_size=2, progress=False, shard_rows=3)
    encs = encode_prompts(tiny_lm, ps.prompts)
    names = store.positions
    got = read_activations(tiny_lm, encs, sites=["resid_pre", "resid_post", "attn_out", "mlp_out"],
                           positions=names, layers=[-1, 0, 1, 2], batch_size=2)
    for key in store.manifest["keys"]:
        site, layer = key.rsplit(".", 1)
        torch.testing.assert_close(store.get(int(layer), site=site), got[(site, int(layer))], atol=1e-6, rtol=0,
                                   msg=key)


def test_site_map_and_errors(tiny_lm):
    m, lay = tiny_lm.model, tiny_lm.layout
    assert site_module(m, lay, 1, "resid_pre") == (lay.layer(m, 1), True)
    assert site_module(m, lay, -1, "resid_post") == (lay.embed(m), False)
    assert site_module(m, lay, 2, "mlp_z") == (lay.mlp_out(m, 2), True)
    assert site_module(m, lay, 2, "attn_out") == (lay.attn_out(m, 2), False)
    assert set(READ_SITES) >= {"resid_pre", "resid_post", "attn_out", "mlp_out", "attn_z", "mlp_z"}
    with pytest.raises(ExtractError, match="not supported|choose from"):
        read_activations(tiny_lm, ["x"], sites=["nope"], positions=[-1], layers=[0])
    with pytest.raises(ExtractError, match="out of range"):
        read_activations(tiny_lm, ["x"], sites=["resid_pre"], positions=[-1], layers=[3])
    with pytest.raises(ExtractError, match="'all'"):
        read_activations(tiny_lm, ["x"], sites=["resid_pre"], positions=["all", -1], layers=[0])


@pytest.mark.parametrize("fixture", ["tiny_qwen2", "tiny_llama"])
def test_shared_prefix_reads_the_same_activations(fixture, request, monkeypatch):
    """The template's common opening computed once ([prefix][padding][own tokens]) gives the activations of
    the full forward at every site and offset from the end; not used for 'mean'/'all' or under a hook."""
    import r1probe.extract.read as RD
    import r1probe.models.prefix as PX
    from r1probe.models import load_model

    lm = load_model(str(request.getfixturevalue(fixture)), dtype="float32", device="cpu")
    texts = _formatted(lm)
    kw = dict(sites=["resid_pre", "resid_post", "attn_out", "mlp_out"], positions=[-1, -2], layers=[-1, 0, 1, 2],
              batch_size=2)
    monkeypatch.setattr(PX, "MIN_SHARED_PREFIX", 10 ** 6)
    full = read_activations(lm, texts, **kw)
    monkeypatch.setattr(PX, "MIN_SHARED_PREFIX", 2)
    encs = RD.encode_texts(lm, texts)
    assert RD.prefix_to_share(lm, encs, [-1, -2]) >= 2
    assert RD.prefix_to_share(lm, encs, ["mean"]) == 0 and RD.prefix_to_share(lm, encs, ["all"]) == 0
    runs = []
    real = RD._prefix_cache
    monkeypatch.setattr(RD, "_prefix_cache", lambda lm_, ids: (runs.append(len(ids)), real(lm_, ids))[1])
    shared = read_activations(lm, texts, **kw)
    assert runs and set(runs) == {RD.prefix_to_share(lm, encs, [-1, -2])}
    assert shared.keys() == full.keys()
    for k in full:
        torch.testing.assert_close(shared[k], full[k], atol=1e-5, rtol=1e-5)
    h = lm.model.model.layers[0].register_forward_hook(lambda m, a, o: None)
    try:
        assert RD.prefix_to_share(lm, encs, [-1]) == 0
    finally:
        h.remove()
