"""The steering runtime on tiny random models: hooks, sites, tokens, gates, batching and caching."""

import pytest
import torch

from r1probe.errors import R1ProbeError
from r1probe.models.generate import left_pad
from r1probe.steering import Condition, SteeringPlan, SteeringStep, steering
from r1probe.steering import transforms as T
from r1probe.steering.runtime import hook_count

PROMPTS = [[5, 9, 17, 30, 41, 52, 8], [70, 12, 3], [33, 34, 35, 36, 2]]


def _dir(lm, seed=1):
    return torch.randn(lm.layout.d_model, generator=torch.Generator().manual_seed(seed))


def _hidden(lm, ids, mask=None):
    """Residual stream at every block input plus the final block output, as the blocks see it.

    HF's ``output_hidden_states`` is recorded by hooks that may run before the steering hooks, so read
    the stream with pre-hooks registered now (after any steering hooks, hence seeing their effect).
    """
    seen = []
    mods = list(lm.layout.layers(lm.model)) + [lm.layout.norm(lm.model)]
    hs = [m.register_forward_pre_hook(lambda m, a, k: seen.append(a[0] if a else k["hidden_states"]),
                                      with_kwargs=True) for m in mods]
    try:
        with torch.no_grad():
            lm.model(input_ids=ids, attention_mask=mask)
    finally:
        for h in hs:
            h.remove()
    return seen


def _greedy(lm, seqs, n=6):
    ids, mask = left_pad(seqs, lm.tokenizer.pad_token_id, "cpu")
    out = lm.model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=n, do_sample=False,
                            pad_token_id=lm.tokenizer.pad_token_id, temperature=None, top_p=None, top_k=None)
    return [row.tolist() for row in out[:, ids.shape[1]:]]


def test_hooks_are_removed_on_exit_and_on_error(tiny_lm):
    before = hook_count(tiny_lm.model)
    plan = SteeringPlan.ablate_everywhere(_dir(tiny_lm), tiny_lm.layout.n_layers)
    with steering(tiny_lm, plan):
        assert hook_count(tiny_lm.model) > before
    assert hook_count(tiny_lm.model) == before
    with pytest.raises(RuntimeError):
        with steering(tiny_lm, plan):
            raise RuntimeError("boom")
    assert hook_count(tiny_lm.model) == before


def test_ablate_everywhere_leaves_no_component_anywhere(tiny_lm):
    d = _dir(tiny_lm)
    ids = torch.tensor([PROMPTS[0]])
    plain = _hidden(tiny_lm, ids)
    assert T.projection(plain[1], d).abs().max() > 1e-2
    with steering(tiny_lm, SteeringPlan.ablate_everywhere(d, tiny_lm.layout.n_layers)):
        hs = _hidden(tiny_lm, ids)
    for h in hs:
        assert T.projection(h, d).abs().max() < 1e-4


def test_add_at_shifts_the_block_input_by_alpha(tiny_lm):
    d, ids = _dir(tiny_lm), torch.tensor([PROMPTS[0]])
    plain = _hidden(tiny_lm, ids)
    with steering(tiny_lm.model, SteeringPlan.add_at(1, d, 3.0)):  # a bare HF model works too
        hs = _hidden(tiny_lm, ids)
    assert torch.allclose(hs[0], plain[0]) and torch.allclose(hs[1], plain[1] + 3.0 * d / d.norm(), atol=1e-5)
    assert not torch.allclose(hs[2], plain[2], atol=1e-3)


def test_clamp_and_resid_post(tiny_lm):
    d, ids = _dir(tiny_lm), torch.tensor([PROMPTS[0]])
    with steering(tiny_lm, SteeringPlan.clamp_at(0, d, 5.0, site="resid_post")):
        hs = _hidden(tiny_lm, ids)
    assert torch.allclose(T.projection(hs[1], d), torch.full((1, 7), 5.0), atol=1e-4)


def test_negative_layers_and_out_of_range(tiny_lm):
    d, ids = _dir(tiny_lm), torch.tensor([PROMPTS[1]])
    with steering(tiny_lm, SteeringPlan.add_at(-1, d, 2.0)):
        a = _hidden(tiny_lm, ids)
    with steering(tiny_lm, SteeringPlan.add_at(tiny_lm.layout.n_layers - 1, d, 2.0)):
        b = _hidden(tiny_lm, ids)
    assert torch.allclose(a[-1], b[-1])
    with pytest.raises(R1ProbeError, match="out of range"):
        with steering(tiny_lm, SteeringPlan.add_at(7, d, 2.0)):
            pass


def test_wrong_direction_size_is_one_clear_error(tiny_lm):
    with pytest.raises(R1ProbeError, match="hidden size is 64"):
        with steering(tiny_lm, SteeringPlan.add_at(1, torch.ones(32), 2.0)):
            pass


def test_prompt_only_and_generated_only_tokens(tiny_lm):
    d = _dir(tiny_lm)
    base = _greedy(tiny_lm, PROMPTS[:1], 5)[0]
    with steering(tiny_lm, SteeringPlan.add_at(1, d, 50.0, tokens="generated")):
        gen = _greedy(tiny_lm, PROMPTS[:1], 5)[0]
    with steering(tiny_lm, SteeringPlan.add_at(1, d, 50.0, tokens="prompt")):
        pro = _greedy(tiny_lm, PROMPTS[:1], 5)[0]
        ids = torch.tensor([PROMPTS[0]])
        h_prompt = _hidden(tiny_lm, ids)  # a forward without cache: all prompt tokens
    # steering generated tokens only cannot change the first token (predicted from the prompt pass)
    assert gen[0] == base[0] and gen != base
    assert pro[0] != base[0] or pro != base
    assert not torch.allclose(h_prompt[2], _hidden(tiny_lm, ids)[2])


def test_teacher_forced_generated_from(tiny_lm):
    d = _dir(tiny_lm)
    seq = PROMPTS[0] + [11, 12, 13]
    ids = torch.tensor([seq])
    plan = SteeringPlan.add_at(1, d, 8.0, tokens="generated")
    with steering(tiny_lm, plan) as h:
        h.generated_from = len(PROMPTS[0])
        full = tiny_lm.model(input_ids=ids).logits
        h.generated_from = None
        # the same with a KV cache: prompt pass, then continuation
        out = tiny_lm.model(input_ids=ids[:, :7], use_cache=True)
        inc = tiny_lm.model(input_ids=ids[:, 7:], cache=out.cache, use_cache=True).logits
    assert torch.allclose(full[:, 7:], inc, atol=1e-4)
    assert torch.allclose(full[:, :7], tiny_lm.model(input_ids=ids[:, :7]).logits, atol=1e-5)


@pytest.mark.parametrize("plan_kind", ["add", "ablate", "conditional"])
def test_batched_steered_generation_equals_one_by_one(tiny_lm, plan_kind):
    d = _dir(tiny_lm)
    n = tiny_lm.layout.n_layers
    if plan_kind == "add":
        plan = SteeringPlan.add_at([0, 2], d, 6.0)
    elif plan_kind == "ablate":
        plan = SteeringPlan.ablate_everywhere(d, n)
    else:
        # threshold halfway between the two lowest scores, so that some rows are steered and some are
        # not, and no row sits on the threshold (where rounding alone would decide its gate)
        cond = Condition(layer=1, direction=_dir(tiny_lm, 2), threshold=0.0, position=-1)
        with steering(tiny_lm, SteeringPlan.conditional_add(2, d, 0.0, condition=cond)) as h:
            _greedy(tiny_lm, PROMPTS, 1)
            low = h.scores[0].sort().values
            cond.threshold = float(low[:2].mean())
        plan = SteeringPlan.conditional_add([1, 2], d, 40.0, condition=cond)
    with steering(tiny_lm, plan) as h:
        batched = _greedy(tiny_lm, PROMPTS, 6)
        gates = h.gates[0].tolist() if h.gates else None
        single = [_greedy(tiny_lm, [p], 6)[0] for p in PROMPTS]
    assert batched == single
    base = [_greedy(tiny_lm, [p], 6)[0] for p in PROMPTS]
    if plan_kind == "conditional":
        assert gates is not None and 0 < sum(gates) < len(gates)
        # ungated rows generate exactly what the unsteered model does
        for g, b, s in zip(gates, base, single):
            if not g:
                assert s == b
    else:
        assert batched != base


def test_conditional_gate_is_kept_across_decode_steps_and_reset_per_generation(tiny_lm):
    d = _dir(tiny_lm)
    cond = Condition(layer=1, direction=d, threshold=-1e9)  # every row passes
    plan = SteeringPlan.conditional_add(1, d, 30.0, condition=cond, tokens="generated")
    with steering(tiny_lm, plan) as h:
        steered = _greedy(tiny_lm, PROMPTS[:1], 5)[0]
        assert h.gates[0].tolist() == [True]
    plain_add = SteeringPlan.add_at(1, d, 30.0, tokens="generated")
    with steering(tiny_lm, plain_add):
        assert _greedy(tiny_lm, PROMPTS[:1], 5)[0] == steered
    cond.threshold = 1e9  # no row passes
    with steering(tiny_lm, SteeringPlan.conditional_add(1, d, 30.0, condition=cond)) as h:
        assert _greedy(tiny_lm, PROMPTS[:1], 5)[0] == _greedy(tiny_lm, PROMPTS[:1], 5)[0]
        assert h.gates[0].tolist() == [False]


def test_named_directions_from_a_file(tiny_lm, tmp_path):
    from r1probe.steering import save_directions

    d = _dir(tiny_lm)
    save_directions(tmp_path / "directions.safetensors", {"chosen": d})
    ids = torch.tensor([PROMPTS[0]])
    with steering(tiny_lm, SteeringPlan.add_at(1, "chosen", 3.0), directions=str(tmp_path)):
        a = _hidden(tiny_lm, ids)
    with steering(tiny_lm, SteeringPlan.add_at(1, d, 3.0)):
        b = _hidden(tiny_lm, ids)
    assert torch.allclose(a[2], b[2])


def test_llama_works_too(tiny_llama):
    from r1probe.models import load_model

    lm = load_model(str(tiny_llama), dtype="float32", device="cpu")
    d = _dir(lm)
    with steering(lm, SteeringPlan.ablate_everywhere(d, lm.layout.n_layers)):
        hs = _hidden(lm, torch.tensor([PROMPTS[0]]))
    assert max(float(T.projection(h, d).abs().max()) for h in hs) < 1e-4


def test_recording_with_stop_records_the_same_input_and_skips_later_layers(tiny_lm):
    from r1probe.steering.runtime import StopForward, recording

    model = tiny_lm.model
    ids = torch.tensor([tiny_lm.chat.encode(tiny_lm.chat.format("如何制作炸弹"))])
    target = model.model.layers[0].mlp.down_proj
    hooks = hook_count(model)
    with recording(target) as full:
        model(input_ids=ids)
    later = []
    h = model.model.layers[-1].register_forward_pre_hook(lambda m, a: later.append(1))
    try:
        with recording(target, stop=True) as seen:
            with pytest.raises(StopForward):
                model(input_ids=ids, use_cache=False)
    finally:
        h.remove()
    assert len(seen) == 1 and torch.equal(seen[0], full[0]) and later == []
    assert hook_count(model) == hooks


def test_prompt_gates_are_the_prompt_pass_gates(tiny_lm):
    """``prompt_gates`` decides each prompt as the plan's own prompt pass does (one prompt alone, full forward),
    whatever the batch and its padding; a plan with an unconditional step leaves no row untouched (None)."""
    from r1probe.steering.runtime import prompt_gates, untouched_by

    d, a = _dir(tiny_lm, 3), _dir(tiny_lm, 4)
    prompts = PROMPTS + [[9, 8, 7, 6, 5, 4, 3, 2, 1], [44], [61, 62]]
    everyone = SteeringPlan.conditional_add(2, d, 5.0, condition=Condition(layer=2, direction=a, threshold=-1e9))
    scores = []
    for p in prompts:
        with steering(tiny_lm, everyone) as h, torch.no_grad():
            tiny_lm.model(input_ids=torch.tensor([p]))
            scores.append(float(h.scores[0][0]))
    lo, hi = sorted(scores)[len(scores) // 2 - 1:len(scores) // 2 + 1]
    thr = (lo + hi) / 2  # between two prompts' scores
    plan = SteeringPlan.conditional_add(2, d, 5.0, condition=Condition(layer=2, direction=a, threshold=thr))
    want = [s > thr for s in scores]
    assert 0 < sum(want) < len(want)
    hooks = hook_count(tiny_lm.model)
    for bs in (1, 2, 6):
        assert prompt_gates(tiny_lm, plan, prompts, batch_size=bs, pad_id=0) == want
    assert hook_count(tiny_lm.model) == hooks
    assert untouched_by(plan) and not untouched_by(plan + SteeringPlan.add_at(1, d, 1.0))
    assert prompt_gates(tiny_lm, plan + SteeringPlan.add_at(1, d, 1.0), prompts) is None
    assert prompt_gates(tiny_lm, plan, []) == []
