"""Click options shared by the verbs: the model options, and options generated from a settings model."""

from __future__ import annotations

import re
import sys

import click

from r1probe.models.builtin import DEFAULT_MODEL
from r1probe.settings import flag_names, flag_value, is_flag_field, settings_fields


def model_options(default_model: str | None = DEFAULT_MODEL, name: str = "model"):
    """Decorator adding --model/--revision/--dtype/--device/--device-map/--trust-remote-code/--chat-template."""

    def deco(f):
        opts = [
            click.option(f"--{name}", f"{name}", default=default_model, show_default=True,
                         help="Model spec: hub id (org/name), local checkpoint folder, .gguf file, or builtin:NAME."),
            click.option("--revision", default=None, help="Hub revision (branch, tag or commit)."),
            click.option("--dtype", default="auto", show_default=True,
                         help="auto (bfloat16 on GPUs and CPUs with native bf16 matmul, amx_bf16 or avx512_bf16; else float32), bfloat16, float16 or float32."),
            click.option("--device", default="auto", show_default=True, help="cpu, cuda, cuda:1 ... (auto: cuda if available)."),
            click.option("--device-map", default=None, help="Pass 'auto' to spread a large model over GPUs (accelerate)."),
            click.option("--trust-remote-code", is_flag=True, help="Allow model code from the hub (off unless asked)."),
            click.option("--chat-template", default=None, help="auto (the model's), r1 (DeepSeek-R1-Distill), or a .jinja file."),
        ]
        for o in reversed(opts):
            f = o(f)
        return f

    return deco


def load_from_options(kw: dict, name: str = "model"):
    """Pop the model options from ``kw`` and load the model."""
    from r1probe.models import load_model

    spec = kw.pop(name)
    return load_model(spec, revision=kw.pop("revision", None), dtype=kw.pop("dtype", None),
                      device=kw.pop("device", None), device_map=kw.pop("device_map", None),
                      trust_remote_code=kw.pop("trust_remote_code", False),
                      chat_template=kw.pop("chat_template", None))


def pop_model_options(kw: dict, name: str = "model") -> dict:
    """Remove the model options from ``kw`` and return them (for deferred loading)."""
    keys = (name, "revision", "dtype", "device", "device_map", "trust_remote_code", "chat_template")
    return {k: kw.pop(k) for k in keys if k in kw}


def stderr_progress(msg: str) -> None:
    click.echo(msg, err=True)


class ProgressBars:
    """A ``progress(message)`` callable for the library's hooks that shows tqdm bars with rate and ETA.

    A message ``NAME: N/TOTAL`` or ``NAME: [N/TOTAL] detail`` moves the bar named NAME (created on first
    sight, closed at TOTAL; the detail is shown beside it); any other message is printed on stderr above
    the bars. ``quiet``: nothing is shown. :meth:`counter` gives the ``progress(n_done, n_total)`` form.
    A bar's clock starts when the previous bar closed or the last line was printed with no bar open (or
    at construction): the first message of a step comes after its first chunk, and the rate and ETA count
    that chunk's time too, but not the work the lines before it reported.
    """

    _STEP = re.compile(r"^(?P<name>[^:\[\]]+?): \[?(?P<n>\d+)/(?P<total>\d+)\]?(?P<rest>.*)$")

    def __init__(self, quiet: bool = False, unit: str = "item"):
        import time

        self.quiet, self.unit, self.bars = quiet, unit, {}
        self._since = time.time()

    def __call__(self, msg: str) -> None:
        if self.quiet:
            return
        m = self._STEP.match(msg)
        if m is None:
            import time

            from tqdm.auto import tqdm

            tqdm.write(msg, file=sys.stderr)
            if not self.bars:
                self._since = time.time()
            return
        self.update(m["name"], int(m["n"]), int(m["total"]), m["rest"].strip(" :"))

    def update(self, name: str, n: int, total: int, detail: str = "") -> None:
        """Move bar ``name`` to ``n`` of ``total``."""
        if self.quiet:
            return
        from tqdm.auto import tqdm

        bar = self.bars.get(name)
        if bar is None or bar.total != total:
            if bar is not None:
                bar.close()
            bar = self.bars[name] = tqdm(total=total, desc=name, unit=self.unit, file=sys.stderr, dynamic_ncols=True)
            bar.start_t = bar.last_print_t = min(bar.start_t, self._since)
        if detail:
            bar.set_postfix_str(detail, refresh=False)
        bar.update(max(0, n - bar.n))
        if n >= total:
            import time

            bar.close()
            del self.bars[name]
            self._since = time.time()

    def counter(self, name: str):
        """A ``progress(n_done, n_total)`` callable moving bar ``name``."""
        return lambda n, total: self.update(name, n, total)

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()
        self.bars.clear()


def sampling_options(samples_help: str):
    """Decorator adding --temperature/--top-p/--samples/--sample-seed (``samples_help`` says what K gives)."""

    def deco(f):
        opts = [
            click.option("--temperature", type=float, default=None,
                         help="Sampling temperature; 0 is greedy. Default: 0.6 for R1-family models (DeepSeek's "
                              "recommendation, with top-p 0.95), greedy otherwise; the choice is recorded in the "
                              "manifest."),
            click.option("--top-p", "top_p", type=float, default=None,
                         help="Nucleus sampling mass (default 0.95 R1-family, else 1)."),
            click.option("--samples", type=click.IntRange(1), default=1, show_default=True, help=samples_help),
            click.option("--sample-seed", type=int, default=0, show_default=True,
                         help="Seed of the sampled generations (sample k uses seed + k)."),
        ]
        for o in reversed(opts):
            f = o(f)
        return f

    return deco


def quiet_option(f):
    """``--quiet``: no progress bars or progress lines (results and errors are still printed)."""
    return click.option("--quiet", "-q", is_flag=True, help="No progress bars or progress lines.")(f)


# --- options generated from a settings model (flag names: ``r1probe.settings.flag_names``) ---------------------
# Values reach pydantic as strings, so validation and its messages are the model's.


def settings_options(model, *, skip: tuple[str, ...] = ()):
    """Decorator adding one option per leaf field of ``model`` (help: the field's description and default)."""

    def deco(fn):
        names = flag_names(model)
        for path, f in reversed(settings_fields(model)):
            if ".".join(path) in skip:
                continue
            decls, dest = names[path], "__".join(path)
            default = f.get_default(call_default_factory=True)
            help_ = (f.description or "").rstrip(".") + (f" [default: {flag_value(default)}]." if default is not None else ".")
            if is_flag_field(f):
                on = decls[0]
                opt = click.option(f"{on}/--no-{on[2:]}", dest, default=None, help=help_)
            else:
                opt = click.option(*decls, dest, default=None, metavar=_metavar(f), help=help_)
            fn = opt(fn)
        return fn

    return deco


def _metavar(f) -> str:
    import typing

    origin = typing.get_origin(f.annotation)
    if origin is list:
        return "A,B"
    if origin is dict:
        return "NAME=N,.."
    if origin is typing.Literal:
        return "[" + "|".join(map(str, typing.get_args(f.annotation))) + "]"
    ann = f.annotation
    for t, mv in ((int, "INTEGER"), (float, "FLOAT")):
        if ann is t or t in typing.get_args(ann):
            return mv
    return "TEXT"


def settings_from_flags(kw: dict, model) -> dict:
    """Pop the options generated for ``model`` out of ``kw`` as a nested dict, leaving unset ones out."""
    out: dict = {}
    for path, _ in settings_fields(model):
        v = kw.pop("__".join(path), None)
        if v is None:
            continue
        d = out
        for p in path[:-1]:
            d = d.setdefault(p, {})
        d[path[-1]] = v
    return out
