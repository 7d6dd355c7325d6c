"""Weight edits that write a steering intervention into the checkpoint (no change of architecture).

All edits act on the matrices that *write* to the residual stream: the token embedding
``E`` ``[V, d]`` and, per block, the attention and MLP output projections ``W`` ``[d, k]``
(``o_proj``, ``down_proj``; ``y = W z (+ b)``). ``r̂`` is the unit direction.

- **Orthogonalisation** (abliteration): ``W ← (I − r̂ r̂ᵀ) W``, ``b ← (I − r̂ r̂ᵀ) b``,
  ``E ← E (I − r̂ r̂ᵀ)``. Nothing ever writes along ``r̂``, so this *equals* the run-time plan
  ``SteeringPlan.ablate_everywhere`` (every residual state has zero projection either way).
  With tied embeddings, editing ``E`` would also edit the unembedding, which run-time ablation
  does not do; ``untie=True`` (default) gives ``lm_head`` its own, unedited copy first.
- **Directional amplification**: ``W ← (I + β r̂ r̂ᵀ) W`` on chosen layers; what the layer writes
  along ``r̂`` is multiplied by ``1 + β``. Equals the run-time op ``amplify`` (``y' = y + β (y·r̂) r̂``)
  at the ``attn_out`` / ``mlp_out`` sites of the same layers.
- **Rank-one read/write edit** (AlphaSteer-style): ``W ← W + λ r̂ aᵀ``; the block adds
  ``λ (a·z) r̂``, where ``z`` is the projection's input and ``a`` a read vector fitted so that
  ``a·z ≈ 1`` on harmful prompts and ``≈ 0`` on benign text (``fit_read_vector``). Amplification
  is the special case ``a = β Wᵀ r̂ / λ``. It approximates the conditional run-time plan "add
  ``λ r̂`` at this layer on harmful prompts" (CAST) with a linear, per-token gate.

Edits change the model in place and return a record of what they did (for the model card).
The registered edits (``r1probe.steering.edits``: settings, fitting, then these functions) are
what ``r1probe edit``, the pipeline and scripts run.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import torch

from r1probe.errors import R1ProbeError
from r1probe.models.layout import Layout, detect_layout
from r1probe.steering.directions import check_size
from r1probe.steering.transforms import unit

WRITERS = ("attn", "mlp")


def _unpack(lm_or_model, layout: Layout | None):
    if layout is None and hasattr(lm_or_model, "layout") and hasattr(lm_or_model, "tokenizer"):
        return lm_or_model.model, lm_or_model.layout
    return lm_or_model, (layout or detect_layout(lm_or_model))


def project_out_rows(w: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """``W ← (I − û ûᵀ) W`` for ``W`` ``[d, k]`` (columns live in the residual space); float32 maths."""
    w32 = w.float()
    return (w32 - torch.outer(u, u @ w32)).to(w.dtype)


def project_out_cols(e: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """``E ← E (I − û ûᵀ)`` for ``E`` ``[V, d]`` (rows live in the residual space)."""
    e32 = e.float()
    return (e32 - torch.outer(e32 @ u, u)).to(e.dtype)


def amplify_rows(w: torch.Tensor, u: torch.Tensor, beta: float) -> torch.Tensor:
    """``W ← (I + β û ûᵀ) W``."""
    w32 = w.float()
    return (w32 + float(beta) * torch.outer(u, u @ w32)).to(w.dtype)


def rank1_rows(w: torch.Tensor, u: torch.Tensor, a: torch.Tensor, lam: float) -> torch.Tensor:
    """``W ← W + λ û aᵀ`` (``a`` lives in the projection's input space, ``[k]``)."""
    return (w.float() + float(lam) * torch.outer(u, a.float().to(w.device))).to(w.dtype)


def _writers(model, layout: Layout, i: int, which: Iterable[str]):
    for w in which:
        if w not in WRITERS:
            raise R1ProbeError(f"unknown writer {w!r}: choose attn or mlp")
        yield w, (layout.attn_out(model, i) if w == "attn" else layout.mlp_out(model, i))


def _layers(layers, n: int) -> list[int]:
    out = []
    for lay in ([layers] if isinstance(layers, int) else layers):
        i = lay + n if lay < 0 else lay
        if not 0 <= i < n:
            raise R1ProbeError(f"layer {lay} is out of range for a model with {n} layers")
        out.append(i)
    return sorted(set(out))


def untie_embeddings(model, layout: Layout) -> bool:
    """Give ``lm_head`` its own copy of the (tied) embedding matrix; returns True if it was tied."""
    emb, head = layout.embed(model), layout.lm_head(model)
    if head.weight.data_ptr() != emb.weight.data_ptr() and not layout.tied_embeddings:
        return False
    head.weight = torch.nn.Parameter(emb.weight.detach().clone(), requires_grad=False)
    model.config.tie_word_embeddings = False
    if hasattr(model.config, "get_text_config"):
        try:
            model.config.get_text_config().tie_word_embeddings = False
        except Exception:  # noqa: BLE001
            pass
    return True


@torch.no_grad()
def orthogonalize(lm_or_model, direction: torch.Tensor, *, layout: Layout | None = None, untie: bool = True) -> dict:
    """Remove ``r̂`` from every write to the residual stream (embeddings, o_proj, down_proj, biases)."""
    model, layout = _unpack(lm_or_model, layout)
    check_size(direction, layout.d_model)
    u = unit(direction).to(next(model.parameters()).device)
    untied = untie_embeddings(model, layout) if untie else False
    if layout.tied_embeddings and not untie:
        untied = False
    emb = layout.embed(model)
    emb.weight.copy_(project_out_cols(emb.weight, u))
    for i in range(layout.n_layers):
        for _, mod in _writers(model, layout, i, WRITERS):
            mod.weight.copy_(project_out_rows(mod.weight, u))
            if getattr(mod, "bias", None) is not None:
                b = mod.bias.float()
                mod.bias.copy_((b - (b @ u) * u).to(mod.bias.dtype))
    return {"op": "orthogonalize", "layers": "all", "writers": ["embed", *WRITERS], "untied_embeddings": untied}


@torch.no_grad()
def amplify(lm_or_model, direction: torch.Tensor, layers: Sequence[int] | int, beta: float, *,
            which: Sequence[str] = WRITERS, layout: Layout | None = None) -> dict:
    """``W ← (I + β r̂ r̂ᵀ) W`` (and ``b`` likewise) for the output projections of ``layers``."""
    model, layout = _unpack(lm_or_model, layout)
    check_size(direction, layout.d_model)
    u = unit(direction).to(next(model.parameters()).device)
    ls = _layers(layers, layout.n_layers)
    for i in ls:
        for _, mod in _writers(model, layout, i, which):
            mod.weight.copy_(amplify_rows(mod.weight, u, beta))
            if getattr(mod, "bias", None) is not None:
                b = mod.bias.float()
                mod.bias.copy_((b + beta * (b @ u) * u).to(mod.bias.dtype))
    return {"op": "amplify", "layers": ls, "writers": list(which), "beta": float(beta)}


@torch.no_grad()
def rank1(lm_or_model, direction: torch.Tensor, layer: int, read: torch.Tensor, lam: float, *,
          writer: str = "mlp", layout: Layout | None = None) -> dict:
    """``W ← W + λ r̂ aᵀ`` on one output projection (``read`` = ``a``, in the projection's input space)."""
    model, layout = _unpack(lm_or_model, layout)
    check_size(direction, layout.d_model)
    (i,) = _layers([layer], layout.n_layers)
    (_, mod), = _writers(model, layout, i, [writer])
    if read.numel() != mod.weight.shape[1]:
        raise R1ProbeError(f"read vector has size {read.numel()} but {writer} projection {i} reads {mod.weight.shape[1]}")
    u = unit(direction).to(mod.weight.device)
    mod.weight.copy_(rank1_rows(mod.weight, u, read.reshape(-1), lam))
    return {"op": "rank1", "layers": [i], "writers": [writer], "lambda": float(lam),
            "read_norm": float(read.float().norm())}


def fit_read_vector(pos: torch.Tensor, neg: torch.Tensor | None = None, *, neg_gram: torch.Tensor | None = None,
                    ridge: float = 1e-2, neg_weight: float = 1.0, null_rank: int | None = None,
                    null_energy: float = 0.999) -> torch.Tensor:
    """Fit ``a`` with ``a·z ≈ 1`` on ``pos`` rows and ``a·z ≈ 0`` on ``neg`` rows (closed form).

    AlphaSteer-style: ``a`` is constrained to the approximate null space of the benign rows
    (``P = I − U Uᵀ``, ``U`` the top eigenvectors of ``Z_negᵀ Z_neg`` holding ``null_energy`` of its
    energy, or ``null_rank`` of them), then ``a = P c`` with ``c`` the ridge solution of
    ``min ‖Z_pos P c − 1‖² + w ‖Z_neg P c‖² + ρ ‖c‖²`` (ρ relative to the mean squared row norm of
    ``Z_pos``). Works from ``k × k`` Gram matrices, so any number of rows is cheap: pass the benign
    rows as ``neg`` or their accumulated ``neg_gram = Σ z zᵀ``.
    """
    pos = pos.double()
    k = pos.shape[1]
    if (neg is None) == (neg_gram is None):
        raise R1ProbeError("fit_read_vector: pass exactly one of neg (rows) or neg_gram (their Gram matrix)")
    gn = neg_gram.double() if neg_gram is not None else neg.double().T @ neg.double()
    evals, evecs = torch.linalg.eigh(gn)  # ascending
    evals, evecs = evals.flip(0).clamp_min(0), evecs.flip(1)
    if null_rank is None:
        e = torch.cumsum(evals, 0) / evals.sum().clamp_min(1e-30)
        null_rank = int((e < null_energy).sum()) + 1
    null_rank = max(0, min(int(null_rank), k - 1))
    U = evecs[:, :null_rank]
    P = torch.eye(k, dtype=torch.float64) - U @ U.T
    zp = pos @ P
    scale = float((pos ** 2).sum(1).mean())
    A = zp.T @ zp + neg_weight * (P @ gn @ P) + ridge * scale * torch.eye(k, dtype=torch.float64)
    c = torch.linalg.solve(A, zp.T @ torch.ones(pos.shape[0], dtype=torch.float64))
    return (P @ c).float()


# ---- the activations a read vector is fitted on ----

def _gram_prefix(lm, token_lists) -> int:
    """Tokens of a prefix every sequence shares and outgrows, worth computing once (0: none, or the
    model carries a value-changing hook)."""
    from r1probe.models.prefix import MIN_SHARED_PREFIX, hooked, shared_prefix

    if len(token_lists) < 2 or hooked(lm.model):
        return 0
    n = min(shared_prefix(token_lists), min(len(t) for t in token_lists) - 1)
    return n if n >= MIN_SHARED_PREFIX else 0


def writer_inputs(lm, layer: int, token_lists: Sequence[Sequence[int]], *, writer: str = "mlp",
                  last: int | None = None, batch_size: int = 16, gram: bool = False):
    """Inputs ``z`` of one output projection over tokenised sequences: ``read_activations`` at site
    ``attn_z`` / ``mlp_z`` (left-padded batches; the forward stops at that projection).

    ``last=k`` keeps each sequence's last ``min(k, length)`` tokens (e.g. the post-instruction tokens) and
    returns the rows ``[N·k, K]``, sequences in input order; ``last=None`` keeps every real token.
    ``gram=True`` returns ``(Σ z zᵀ, count)`` in float64 instead of the rows (benign sets of any size).
    With ``gram=True`` and every token read, a token prefix all sequences share (the chat template's
    system prompt) runs once: its rows enter the sum once per sequence, ``k · Z_pᵀ Z_p``, and the
    sequences' own tokens are read after it from its key/value cache.
    """
    from r1probe.extract.read import read_activations

    (i,) = _layers([layer], lm.layout.n_layers)
    if writer not in WRITERS:
        raise R1ProbeError(f"unknown writer {writer!r}: choose attn or mlp")
    site = f"{writer}_z"
    positions = ["all"] if last is None else list(range(-int(last), 0))

    def tail(z, rows):  # each sequence's last min(last, length) rows of z [B, last, K]
        return torch.cat([z[r, last - min(last, len(token_lists[j])):] for r, j in enumerate(rows)])

    if gram:
        acc: dict = {"G": None, "n": 0}
        pre = _gram_prefix(lm, token_lists) if last is None else 0
        if pre:
            zp = read_activations(lm, [list(token_lists[0][:pre])], sites=[site], positions=["all"],
                                  layers=[i])[(site, i)]
            acc["G"] = (zp.T @ zp).double().cpu() * len(token_lists)
            acc["n"] = pre * len(token_lists)

        def add(rows, acts):  # one float32 product per batch (a few thousand rows), summed in float64
            z = acts[(site, i)]
            z = z if last is None else tail(z, rows)
            g = (z.T @ z).double().cpu()
            acc["G"] = g if acc["G"] is None else acc["G"] + g
            acc["n"] += z.shape[0]
        read_activations(lm, token_lists, sites=[site], positions=positions, layers=[i], batch_size=batch_size,
                         sink=add, after_prefix=pre)
        return acc["G"], acc["n"]
    z = read_activations(lm, token_lists, sites=[site], positions=positions, layers=[i],
                         batch_size=batch_size)[(site, i)]
    return z if last is None else tail(z, range(len(token_lists)))
