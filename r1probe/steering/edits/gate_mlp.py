"""A thresholded gate compiled into the MLP: two extra SwiGLU neurons per gated layer write ``λ r̂`` only
where a read score passes a threshold (a CAST-like condition in stock weights, no hooks, no remote code).

Qwen2/Llama MLPs are ``y = W_down (silu(W_gate x) ⊙ W_up x)`` with no biases, ``x`` the block's
post-attention RMS-normed residual (``mlp_in``). The edit appends two neurons to the MLP of each gated
layer ``L`` (rows of ``W_gate`` and ``W_up``, columns of ``W_down``):

- **bias channel** ``c``: a linear read that is nearly constant, ``b(x) = c·x ≈ 1`` on every token.
  No bias exists, but RMS normalisation and the model's large fixed residual components make one
  direction of ``x`` close to constant; ``c = (Σ + ρ·tr(Σ)/d·I)⁻¹ μ`` (``μ``, ``Σ``: mean and covariance of
  ``x`` over the fit tokens), scaled so that ``mean(b) = 1``. The fit records how constant it is.
- **read score** ``s(x) = a·x``: ``a`` fitted like ``rank1-gate``'s read vector (``edit.fit_read_vector``:
  ``a·x ≈ 1`` at harmful prompts' post-instruction tokens, ``≈ 0`` on every benign token), then rescaled so
  that the harmful rows' mean score ``ŝ`` is exactly 1 (the threshold is in those units), or given as a
  direction ``d`` of the probe folder (``read_key``): ``a = d̂ / w`` with ``w`` the post-attention norm's
  weight, so ``s = d̂·h/rms(h)``, the projection of the RMS-normalised mid-block residual.
- with ``Z = 20``, ``W = 40``, ``β = (W + 2Z) / width`` and threshold ``t``, the two neurons are

      gate rows  g₁ = β a − (β t + Z) c,   g₂ = g₁ − W c;    up rows u₁ = u₂ = c;
      down cols  (λ / W) r̂,  −(λ / W) r̂

  so the layer's MLP output gains  ``Δy = (λ / W) · b · [silu(z₁) − silu(z₁ − W b)] · r̂``,
  ``z₁ = b · (β ŝ − β t − Z)``, ``ŝ = s / b`` (``gate_delta``).

Exactness (``silu(z) = z σ(z)``): for ``b > 0``, ``ŝ ≤ t`` gives ``z₁ ≤ −Z b`` and
``|Δy| ≤ λ b · Z b e^{−Z b} / W``, about ``λ · 10⁻⁹`` at ``b = 1`` (the gate is silent); ``ŝ ≥ t + width``
gives ``z₁ − W b ≥ Z b`` and ``Δy = λ b² r̂ (1 − ε)``, ``|ε| ≤ 2 Z e^{−Z b} / W`` (the residual moves by
``λ b² r̂``); in between the gate ramps up about linearly (silu's minimum, −0.2785, lets it dip to
``−0.2785 λ b / W`` and overshoot by as much). The threshold therefore applies to ``ŝ = s / b`` and the
written strength is ``λ b²``: a step of height exactly ``λ`` only where the bias channel reads exactly 1;
its measured spread (``bias_std``, ``bias_min``, ``bias_max`` in the record) is the spread of the effective
threshold and strength. Where ``b`` is small the margins shrink with it, and a token with ``b ≤ 0``
would invert the gate; the fit warns when the sampled minimum is below 0.5.
In bfloat16 the gate rows carry about 3 significant digits, so the threshold moves by about
``2⁻⁸ · |β s| / β``; silence and saturation keep their ``Z`` margins.

Stock config: HF Qwen2/Llama configs have one ``intermediate_size``, so *every* layer's MLP grows by
two neurons; in layers without a gate the new rows and columns are zero and exactly inert
(``silu(0) · 0 = 0``, and a zero column of ``W_down`` adds nothing). ``config.intermediate_size`` grows
with them, so the export loads with plain ``AutoModelForCausalLM.from_pretrained``. Several gated
layers share the same two new slots (each layer its own rows). Applying the edit twice adds two more.
The run-time conditional plan (CAST) decides once per prompt; this gate decides per token at
layer ``L``'s MLP, so the two agree only where every token passes (and ``b = 1``).
"""

from __future__ import annotations


import torch
from pydantic import Field, model_validator

from r1probe.errors import R1ProbeError
from r1probe.steering import edit as E
from r1probe.steering.directions import check_size
from r1probe.steering.edits.base import Fitted, ReadFitSettings
from r1probe.steering.plan import parse_layers
from r1probe.steering.transforms import unit

METHOD = "thresholded SwiGLU gate neurons (read score vs bias channel) writing lambda r"
#: silence margin Z and ramp span W of the pre-activation (see the module docstring)
MARGIN, SPAN = 20.0, 40.0
#: neurons each gate adds to every layer's MLP
NEURONS = 2


class GateMlpSettings(ReadFitSettings):
    """Settings of the gate-mlp edit."""

    layers: str = Field("12", description="Layer(s) whose MLP gets the gate neurons: 12, 10,12 or 8-15 "
                                          "(negative counts from the end).")
    lam: float = Field(20.0, description="Strength: the residual moves by about lam r^ where the gate is open.")
    threshold: float = Field(1.2, description="The gate is silent where the read score is at or below this "
                                              "(a fitted read: in units of the harmful fit rows' mean score, "
                                              "benign tokens about 0).")
    width: float = Field(0.4, gt=0, description="Score range above the threshold over which the gate opens "
                                                 "fully (full strength from threshold + width).")
    read_key: str | None = Field(None, description="Read a direction of the probe folder (score: its unit vector "
                                                   "times the RMS-normalised mid-block residual) instead of "
                                                   "fitting a read vector.")
    bias_ridge: float = Field(1e-3, gt=0, description="Ridge of the bias-channel fit, relative to the mean "
                                                      "variance of the MLP input.")
    post_tokens: int | None = Field(None, ge=1, description="Harmful rows per prompt: its last N tokens "
                                                            "(default: the template's post-instruction tokens).")
    batch_size: int = Field(16, ge=1, description="Batch size of the fitting forwards.")

    @model_validator(mode="after")
    def _check(self):
        if self.lam <= 0:
            raise ValueError(f"lam {self.lam:g}: the strength must be positive")
        return self


# ---- the maths ----

def gate_rows(a: torch.Tensor, c: torch.Tensor, r: torch.Tensor, lam: float, threshold: float, width: float):
    """``(gate [2, k], up [2, k], down [d, 2])`` of the two gate neurons (float32), from the read vector ``a``,
    the bias channel ``c`` (both in the MLP input space ``[k]``) and the direction ``r`` ``[d]``."""
    a, c = a.float().reshape(-1), c.float().reshape(-1)
    beta = (SPAN + 2 * MARGIN) / float(width)
    g1 = beta * a - (beta * float(threshold) + MARGIN) * c
    gate = torch.stack([g1, g1 - SPAN * c])
    up = torch.stack([c, c])
    u = unit(r).to(a.device)
    down = torch.stack([u, -u], dim=1) * (float(lam) / SPAN)
    return gate, up, down


def gate_delta(x: torch.Tensor, a: torch.Tensor, c: torch.Tensor, r: torch.Tensor, lam: float, threshold: float,
               width: float) -> torch.Tensor:
    """What the gate neurons add to the MLP output at inputs ``x`` ``[..., k]``:
    ``(λ / W) b [silu(z₁) − silu(z₁ − W b)] r̂`` (float32), the closed form of the module docstring."""
    gate, up, down = gate_rows(a, c, r, lam, threshold, width)
    x32 = x.float()
    h = torch.nn.functional.silu(x32 @ gate.T.to(x.device)) * (x32 @ up.T.to(x.device))
    return h @ down.T.to(x.device)


def read_scores(x: torch.Tensor, a: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(ŝ, b)``: the score relative to the bias channel, ``a·x / c·x``, and the bias channel ``c·x``."""
    b = x.float() @ c.float()
    return (x.float() @ a.float()) / b, b


def fit_bias_channel(mean: torch.Tensor, cov: torch.Tensor, ridge: float = 1e-3) -> torch.Tensor:
    """``c = (Σ + ρ·tr(Σ)/k·I)⁻¹ μ``, the read with the smallest variance for its mean, scaled so ``c·μ = 1``."""
    mean, cov = mean.double(), cov.double()
    k = mean.numel()
    c = torch.linalg.solve(cov + ridge * float(cov.diagonal().mean()) * torch.eye(k, dtype=torch.float64), mean)
    den = float(c @ mean)
    if not den > 0:
        raise R1ProbeError("gate-mlp: the MLP input has no usable constant component (the bias-channel fit failed)")
    return (c / den).float()


def swiglu_parts(lm, i: int):
    """``(mlp, gate_proj, up_proj, down_proj)`` of layer ``i``; one clear error if the MLP is not a bias-free SwiGLU."""
    mlp = lm.layout.mlp(lm.model, i)
    parts = [getattr(mlp, n, None) for n in ("gate_proj", "up_proj", "down_proj")]
    act = getattr(lm.model.config, "hidden_act", None)
    if any(not isinstance(p, torch.nn.Linear) for p in parts) or act != "silu":
        raise R1ProbeError(f"gate-mlp needs a SwiGLU MLP (gate_proj, up_proj, down_proj, silu); layer {i} of this "
                           f"{lm.layout.family} model has {type(mlp).__name__} with hidden_act {act!r}")
    if any(p.bias is not None for p in parts):
        raise R1ProbeError(f"gate-mlp: layer {i}'s MLP projections have biases; only bias-free SwiGLU MLPs are supported")
    return (mlp, *parts)


@torch.no_grad()
def grow_mlps(lm, rows: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]], n_new: int = NEURONS) -> int:
    """Append ``n_new`` neurons to every layer's MLP (``rows[i] = (gate, up, down)`` for gated layers, zeros
    elsewhere) and grow ``config.intermediate_size``; returns the new size."""
    n = lm.layout.n_layers
    sizes = set()
    for i in range(n):
        mlp, gp, upp, dp = swiglu_parts(lm, i)
        k, d = gp.in_features, dp.out_features
        g, u, w = rows.get(i) or (torch.zeros(n_new, k), torch.zeros(n_new, k), torch.zeros(d, n_new))
        for mod, extra, dim in ((gp, g, 0), (upp, u, 0), (dp, w, 1)):
            new = torch.cat([mod.weight.detach(), extra.to(mod.weight.device, mod.weight.dtype)], dim=dim)
            mod.weight = torch.nn.Parameter(new, requires_grad=False)
        gp.out_features, upp.out_features, dp.in_features = gp.out_features + n_new, upp.out_features + n_new, \
            dp.in_features + n_new
        if hasattr(mlp, "intermediate_size"):
            mlp.intermediate_size = gp.out_features
        sizes.add(gp.out_features)
    if len(sizes) != 1:
        raise R1ProbeError(f"gate-mlp: the layers' MLPs have different sizes {sorted(sizes)}; a stock config needs one")
    size = sizes.pop()
    cfgs = [lm.model.config]
    if hasattr(lm.model.config, "get_text_config"):
        cfgs.append(lm.model.config.get_text_config())
    for cfg in cfgs:
        cfg.intermediate_size = size
    return size


# ---- fitting ----

@torch.no_grad()
def read_mlp_inputs(lm, layers: list[int], harmful: list[list[int]], benign: list[list[int]], *, post_tokens: int,
                    batch_size: int = 16, keep_every: int = 7) -> dict:
    """Per layer: the MLP inputs at the harmful texts' last ``post_tokens`` tokens (rows ``pos``); the sum, Gram
    matrix ``Σ x xᵀ`` (float64) and count over every benign token (``sum``, ``gram``, ``n``) and over every token
    of both (``sum_all``, ``gram_all``, ``n_all``); and every ``keep_every``-th benign row (``sample``)."""
    from r1probe.extract.read import read_activations

    out = {i: {"pos": [], "sample": [], "n": 0, "n_all": 0} for i in layers}

    def moments(o, x, suffix):
        s, g = x.double().sum(0).cpu(), (x.T @ x).double().cpu()
        for key, v in ((f"sum{suffix}", s), (f"gram{suffix}", g)):
            o[key] = v if o.get(key) is None else o[key] + v
        o[f"n{suffix}"] += x.shape[0]

    def sink(texts, is_harmful):
        def add(rows, acts):
            lens = [len(texts[j]) for j in rows]
            for i in layers:
                x, o = acts[("mlp_in", i)], out[i]
                moments(o, x, "_all")
                if is_harmful:
                    ends = torch.tensor(lens).cumsum(0).tolist()
                    o["pos"].append(torch.cat([x[e - min(post_tokens, n):e] for e, n in zip(ends, lens)]).cpu())
                else:
                    moments(o, x, "")
                    o["sample"].append(x[::keep_every].cpu())
        return add

    for texts, is_harmful in ((harmful, True), (benign, False)):
        read_activations(lm, texts, sites=["mlp_in"], positions=["all"], layers=layers, batch_size=batch_size,
                         sink=sink(texts, is_harmful))
    for i in layers:
        o = out[i]
        o["pos"] = torch.cat(o["pos"]).float()
        o["sample"] = torch.cat(o["sample"]).float()
    return out


def _norm_weight(lm, i: int, k: int) -> torch.Tensor:
    layer = lm.layout.layer(lm.model, i)
    norm = getattr(layer, "post_attention_layernorm", None)
    w = getattr(norm, "weight", None)
    if w is None or w.numel() != k:
        raise R1ProbeError(f"gate-mlp: --set read_key=... needs the block's post_attention_layernorm weight "
                           f"(layer {i} has none)")
    return w.detach().float().cpu()


def targets(lm, directions, settings) -> tuple[torch.Tensor, list[int], torch.Tensor | None]:
    """``(r, layers, read direction or None)`` checked against the model (one clear error each), before any fit."""
    s = settings
    r = directions.get(s.direction_key, lm.layout.d_model)
    check_size(r, lm.layout.d_model)
    layers = E._layers(parse_layers(s.layers, lm.layout.n_layers), lm.layout.n_layers)
    for i in layers:
        swiglu_parts(lm, i)
    read_dir = directions.get(s.read_key, lm.layout.d_model) if s.read_key else None
    return r, layers, read_dir


@torch.no_grad()
def fit_gate(lm, directions, settings, fit, *, log=print) -> Fitted:
    """The direction ``r``, and per layer the read vector ``a`` and bias channel ``c`` with their diagnostics."""
    s = settings
    r, layers, read_dir = targets(lm, directions, s)
    post = s.post_tokens or max(1, len(lm.chat.post_instruction_positions(lm.chat.format("x"), "x")))
    harm = [lm.chat.encode(lm.chat.format(p)) for p in fit.harmful]
    acts = read_mlp_inputs(lm, layers, harm, fit.benign, post_tokens=post, batch_size=s.batch_size)
    per_layer = {}
    for i in layers:
        o = acts[i]
        # the bias channel must be constant on every token, harmful prompts' and benign texts' alike
        m_all, g_all = o["sum_all"] / o["n_all"], o["gram_all"] / o["n_all"]
        c = fit_bias_channel(m_all, g_all - torch.outer(m_all, m_all), s.bias_ridge)
        if read_dir is not None:
            a = unit(read_dir).float().cpu() / _norm_weight(lm, i, o["pos"].shape[1])
            how = f"direction {s.read_key} (unit, over the RMS-normalised mid-block residual)"
        else:
            a = E.fit_read_vector(o["pos"], neg_gram=o["gram"], ridge=s.ridge, null_energy=s.null_energy)
            # in units of the harmful rows' mean score (the null-space constraint shrinks the fitted scale)
            m = float((o["pos"] @ a).mean() / (o["pos"] @ c).mean())
            if not m > 0:
                raise R1ProbeError(f"gate-mlp: the read vector fitted at layer {i} does not score the harmful rows "
                                   "above the benign ones (try another layer or fit data)")
            a = a / m
            how = (f"fitted (harmful post-instruction tokens -> 1, benign tokens -> 0), rescaled by 1/{m:.4g} to "
                   f"a harmful mean of 1")
        sh, bh = read_scores(o["pos"], a, c)
        sb, bb = read_scores(o["sample"], a, c)
        b_all = torch.cat([bh, bb])
        diag = {"layer": i, "read": how, "bias_mean": float(b_all.mean()), "bias_std": float(b_all.std()),
                "bias_min": float(b_all.min()), "bias_max": float(b_all.max()),
                "harmful_score_mean": float(sh.mean()),
                "harmful_open": float((sh >= s.threshold + s.width).float().mean()),
                "harmful_above_threshold": float((sh > s.threshold).float().mean()),
                "benign_score_mean": float(sb.mean()),
                "benign_above_threshold": float((sb > s.threshold).float().mean()),
                "benign_score_q999": float(torch.quantile(sb, 0.999)) if sb.numel() else None,
                "n_benign_tokens": o["n"], "n_benign_sampled": int(sb.numel()), "n_harmful_rows": int(sh.numel())}
        if diag["bias_min"] < 0.5:
            log(f"gate-mlp: warning: at layer {i} the bias channel falls to {diag['bias_min']:.3g} on a fit token "
                f"(the gate's threshold and strength scale with it; at <= 0 the gate inverts)")
        log(f"gate-mlp layer {i}: bias channel {diag['bias_mean']:.3f} +- {diag['bias_std']:.3f} "
            f"[{diag['bias_min']:.3f}, {diag['bias_max']:.3f}]; harmful rows above threshold "
            f"{diag['harmful_above_threshold']:.1%}, benign tokens above {diag['benign_above_threshold']:.2%}")
        per_layer[i] = {"read": a, "bias": c, "diag": diag}
    return Fitted(s, r, {"layers": per_layer, "post_tokens": post, "n_harmful": len(fit.harmful),
                         "fit_data": fit.description, "fit_ids": fit.ids})


class GateMlp:
    """Two SwiGLU neurons per gated layer: silent below the read-score threshold, writing ``λ r̂`` above it."""

    name = "gate-mlp"
    summary = ("extra MLP neurons (intermediate_size + 2) that write lam r where a read score passes a threshold "
               "and stay exactly silent below it")
    Settings = GateMlpSettings

    def fit(self, lm, directions, settings, *, log=print) -> Fitted:
        s = settings
        targets(lm, directions, s)  # bad names and layers fail before the fit data is read
        fit = s.fit_data(lm)
        log(f"gate-mlp: reading MLP inputs of {len(fit.harmful)} harmful prompts and {len(fit.benign)} benign texts")
        return fit_gate(lm, directions, s, fit, log=log)

    @torch.no_grad()
    def apply(self, lm, fitted: Fitted) -> dict:
        s, f = fitted.settings, fitted.data
        rows = {i: gate_rows(v["read"], v["bias"], fitted.direction.float().cpu(), s.lam, s.threshold, s.width)
                for i, v in f["layers"].items()}
        size = grow_mlps(lm, rows)
        return {"op": self.name, "method": METHOD, "layers": sorted(f["layers"]), "lambda": float(s.lam),
                "threshold": float(s.threshold), "width": float(s.width), "neurons_per_layer": NEURONS,
                "intermediate_size": size, "margin": MARGIN, "span": SPAN,
                "read_key": s.read_key, "n_harmful": f["n_harmful"], "post_tokens": f["post_tokens"],
                "ridge": s.ridge, "null_energy": s.null_energy, "bias_ridge": s.bias_ridge,
                "fit": [v["diag"] for _, v in sorted(f["layers"].items())],
                "fit_data": f["fit_data"], "tuning_reads": f.get("fit_ids") or {}}
