"""The ``r1probe`` command line: a thin layer over the Python API.

Each verb lives next to the API it calls (``r1probe/<pkg>/commands.py``) and is imported only when
invoked. ``r1probe --help`` lists the verbs with the first line of each command's help read from the
source (no verb module is imported), so it stays fast. A verb whose module fails to import is an
error naming the verb and the module, never a silently missing verb.
"""

from __future__ import annotations

import ast
import importlib
import sys
import traceback
from pathlib import Path

import click

from r1probe import __version__
from r1probe.errors import R1ProbeError

#: verb -> "module:attribute" of its click command
VERBS = {
    "models": "r1probe.models.commands:models",
    "chat": "r1probe.models.commands:chat",
    "extract": "r1probe.extract.commands:extract",
    "probe": "r1probe.probes.commands:probe",
    "steer": "r1probe.steering.commands:steer",
    "edit": "r1probe.steering.commands:edit",
    "edit-search": "r1probe.tuning.commands:edit_search",
    "enhance": "r1probe.tuning.commands:enhance_deprecated",
    "eval": "r1probe.eval.commands:eval_cmd",
    "serve": "r1probe.eval.commands:serve",
    "compare": "r1probe.analysis.commands:compare",
    "distill": "r1probe.distill.commands:distill",
    "run": "r1probe.pipeline.commands:run",
}

_PACKAGE_DIR = Path(__file__).resolve().parent


class VerbImportError(ImportError):
    """A verb's module or command could not be loaded (a bug in the installation, not in the input)."""


def load_verb(name: str) -> click.Command | None:
    """The click command of verb ``name`` (``None`` for an unknown verb); raises :class:`VerbImportError`
    naming the verb when its module does not import or lacks the command."""
    target = VERBS.get(name)
    if target is None:
        return None
    mod, attr = target.split(":")
    try:
        module = importlib.import_module(mod)
    except Exception as e:  # noqa: BLE001 - reported with the verb's name; the cause stays chained
        raise VerbImportError(f"the '{name}' verb cannot be loaded: importing {mod} failed: "
                              f"{type(e).__name__}: {e}") from e
    command = getattr(module, attr, None)
    if not isinstance(command, click.Command):
        raise VerbImportError(f"the '{name}' verb cannot be loaded: {mod} has no click command {attr!r}")
    return command


def verb_help(name: str) -> str:
    """The help text of verb ``name`` read from its module's source without importing it: the
    ``short_help``/``help`` argument of the decorator, else the function's docstring. Falls back to
    importing the command when the source does not define it as a decorated function."""
    mod, attr = VERBS[name].split(":")
    rel = Path(*mod.split(".")[1:])
    for path in (_PACKAGE_DIR / rel.with_suffix(".py"), _PACKAGE_DIR / rel / "__init__.py"):
        if path.is_file():
            found = _help_in_source(path.read_text(encoding="utf-8"), attr)
            if found is not None:
                return found
            break
    command = load_verb(name)
    return command.short_help or command.help or ""


def _help_in_source(source: str, attr: str) -> str | None:
    for node in ast.parse(source).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == attr and node.decorator_list:
            for dec in node.decorator_list:  # @click.command(...) / @click.group(...) / @group.command(...)
                func = getattr(dec, "func", None)
                name = getattr(func, "attr", getattr(func, "id", ""))
                if name not in ("command", "group"):
                    continue
                for kw in dec.keywords:
                    if kw.arg in ("short_help", "help") and isinstance(kw.value, ast.Constant):
                        return str(kw.value.value)
            return ast.get_docstring(node) or ""
    return None


class LazyGroup(click.Group):
    def list_commands(self, ctx):
        return list(VERBS)

    def get_command(self, ctx, name):
        return load_verb(name)

    def format_commands(self, ctx, formatter):
        if not VERBS:
            return
        limit = formatter.width - 6 - max(len(v) for v in VERBS)
        rows = [(v, click.utils.make_default_short_help(verb_help(v).split("\f", 1)[0], limit)) for v in VERBS]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="r1probe")
@click.option("--debug", is_flag=True, help="Show full tracebacks on error.")
@click.pass_context
def cli(ctx, debug):
    """r1probe: find, steer and restore the refusal direction of reasoning LLMs (Chinese safety)."""
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug


def main(argv=None) -> None:
    args = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in args
    try:
        cli.main(args=args, prog_name="r1probe", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("r1probe: aborted", err=True)
        sys.exit(130)
    except click.ClickException as e:  # one line, like every other error (usage errors name the --help to read)
        msg = " ".join(e.format_message().split())
        ctx = getattr(e, "ctx", None)
        hint = f" (see '{ctx.command_path} --help')" if isinstance(e, click.UsageError) and ctx is not None else ""
        click.echo(f"r1probe: error: {msg}{hint}", err=True)
        sys.exit(e.exit_code)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except R1ProbeError as e:
        if debug:
            traceback.print_exc()
        click.echo(f"r1probe: error: {e}", err=True)
        sys.exit(2)
    except (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError) as e:
        if debug:
            traceback.print_exc()
        click.echo(f"r1probe: error: {e.strerror or e}: {e.filename}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        click.echo("r1probe: interrupted", err=True)
        sys.exit(130)
    except Exception as e:  # noqa: BLE001 - the CLI never shows a raw traceback without --debug
        if debug:
            traceback.print_exc()
        msg = str(e).splitlines()[0] if str(e) else ""
        click.echo(f"r1probe: error: {type(e).__name__}: {msg} (rerun with --debug for the traceback)", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
