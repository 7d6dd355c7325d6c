"""``r1probe distill``: fine-tune a student on R1-format reasoning traces and export it."""

from __future__ import annotations

import json
from pathlib import Path

import click

from r1probe.cli_options import stderr_progress
from r1probe.errors import R1ProbeError


def _layers(spec: str | None):
    if not spec:
        return None
    out = []
    for part in spec.split(","):
        part = part.strip()
        if "-" in part[1:]:
            a, b = part.split("-", 1)
            out.extend(range(int(a), int(b) + 1))
        elif part:
            out.append(int(part))
    return tuple(out)


@click.command()
@click.option("--student", required=True, help="Student model spec: hub id, checkpoint folder, .gguf or builtin:NAME.")
@click.option("--traces", "traces_arg", default="gsm8k", show_default=True,
              help="A JSONL traces file (prompt/reasoning/answer or prompt/completion), 'gsm8k' "
                   "(GSM8K train rewritten into R1 format) or 'gsm8k:PATH'.")
@click.option("--teacher", default=None, help="Generate the traces with this teacher model instead (needs --prompts).")
@click.option("--prompts", default=None, type=click.Path(exists=True, dir_okay=False),
              help="Prompt file (JSON/JSONL/CSV) for --teacher.")
@click.option("--teacher-max-new-tokens", default=1024, show_default=True, type=click.IntRange(16))
@click.option("--save-traces", default=None, type=click.Path(dir_okay=False), help="Also write the traces used here (JSONL).")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Export folder (standard HF checkpoint).")
@click.option("--work-dir", default=None, type=click.Path(file_okay=False), help="Checkpoints and loss log (default OUT.work).")
@click.option("--limit", default=None, type=click.IntRange(1), help="Use the first N traces (after the seeded shuffle for gsm8k).")
@click.option("--lora/--full", default=True, show_default=True, help="LoRA adapters (merged at export) or full fine-tuning.")
@click.option("--lora-rank", default=16, show_default=True, type=click.IntRange(1))
@click.option("--lora-alpha", default=32.0, show_default=True, type=float)
@click.option("--train-layers", default=None, help="Only these decoder layers, e.g. 12-23 or 0,4,8 (default all).")
@click.option("--lr", default=None, type=float, help="Peak learning rate (default 2e-4 LoRA, 1e-5 full).")
@click.option("--epochs", default=1.0, show_default=True, type=float)
@click.option("--max-steps", default=None, type=click.IntRange(1), help="Optimizer steps (overrides --epochs).")
@click.option("--batch-size", default=1, show_default=True, type=click.IntRange(1))
@click.option("--grad-accum", default=8, show_default=True, type=click.IntRange(1))
@click.option("--max-len", default=512, show_default=True, type=click.IntRange(16))
@click.option("--warmup-steps", default=5, show_default=True, type=click.IntRange(0))
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--save-every", default=25, show_default=True, type=click.IntRange(1), help="Checkpoint every N steps.")
@click.option("--time-limit", default=None, type=float, help="Stop after this many minutes (checkpoint + unfinished export).")
@click.option("--dtype", default="auto", show_default=True, help="Student weights dtype (bfloat16 default).")
@click.option("--device", default="auto", show_default=True)
@click.option("--chat-template", default=None, help="auto (the student's), r1, or a .jinja file.")
@click.option("--overwrite", is_flag=True, help="Replace an existing export made by a different run.")
def distill(student, traces_arg, teacher, prompts, teacher_max_new_tokens, save_traces, out, work_dir, limit, lora,
            lora_rank, lora_alpha, train_layers, lr, epochs, max_steps, batch_size, grad_accum, max_len, warmup_steps,
            seed, save_every, time_limit, dtype, device, chat_template, overwrite):
    """Fine-tune STUDENT on reasoning traces in R1 format (loss on the reply only) and export it.

    \b
    r1probe distill --student builtin:qwen2.5-coder-0.5b-instruct --traces gsm8k --limit 500 \\
        --max-steps 60 --out runs/distill-mini
    Rerunning the same command resumes from the last checkpoint, or does nothing when finished.
    """
    from r1probe.distill.sft import SFTConfig, train_full
    from r1probe.distill.traces import gsm8k_r1_traces, read_traces, teacher_traces, traces_sha256, write_traces
    from r1probe.provenance import check_writable_dir

    check_writable_dir(out)

    cfg = SFTConfig(lr=lr if lr is not None else (2e-4 if lora else 1e-5), epochs=epochs, max_steps=max_steps,
                    batch_size=batch_size, grad_accum=grad_accum, max_len=max_len, seed=seed, lora=lora,
                    lora_rank=lora_rank, lora_alpha=lora_alpha, train_layers=_layers(train_layers),
                    warmup_steps=warmup_steps, save_every=save_every,
                    time_limit_s=time_limit * 60 if time_limit else None)
    load_kw = {"dtype": dtype, "device": device, "chat_template": chat_template}
    if teacher:
        if not prompts:
            raise R1ProbeError("--teacher needs --prompts FILE")
        from r1probe.models import load_model
        from r1probe.steering.fit_data import read_prompts

        wd = Path(work_dir) if work_dir else Path(out).with_name(Path(out).name + ".work")
        cache = wd / "teacher_traces.jsonl"
        if cache.exists():
            traces = read_traces(cache)
            stderr_progress(f"distill: reusing {len(traces)} teacher traces from {cache}")
        else:
            rows = read_prompts(prompts, limit)
            tlm = load_model(teacher, dtype=dtype, device=device)
            stats: dict = {}
            traces = teacher_traces(tlm, [r["prompt"] for r in rows], ids=[r["id"] for r in rows],
                                    max_new_tokens=teacher_max_new_tokens, seed=seed, progress=True, stats=stats)
            stderr_progress(f"distill: teacher traces {json.dumps(stats)}")
            if not traces:
                raise R1ProbeError(f"teacher {teacher} produced no closed <think> block with an answer")
            write_traces(cache, traces)
            del tlm
        source = f"teacher:{teacher} prompts:{prompts}"
    elif traces_arg == "gsm8k" or traces_arg.startswith("gsm8k:"):
        path = traces_arg.split(":", 1)[1] if ":" in traces_arg else None
        traces = gsm8k_r1_traces(path, limit=limit, seed=seed)
        source = f"gsm8k-train r1-rewrite ({path or 'data root'}) limit={limit} seed={seed}"
    else:
        traces = read_traces(traces_arg, limit)
        source = traces_arg
    if save_traces:
        write_traces(save_traces, traces)
    stderr_progress(f"distill: {len(traces)} traces (sha256 {traces_sha256(traces)[:12]}) -> {out}")
    res = train_full(student, traces, cfg, out, work_dir=work_dir, overwrite=overwrite, traces_source=source,
                     load_kw=load_kw)
    s = res.stats
    ls = s.get("loss_summary", {})
    click.echo(f"{'finished' if res.finished else 'stopped early'}: {res.steps}/{res.total_steps} steps; "
               f"loss {ls.get('first')} -> {ls.get('last')}; tokens/s {s.get('tokens_per_s_this_call')}; "
               f"peak RSS {s.get('peak_rss_mb')} MiB; export {res.export}")
