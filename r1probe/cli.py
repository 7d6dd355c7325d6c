"""The ``r1probe`` command line: a thin layer over the Python API.

Each verb lives next to the API it calls (``r1probe/<pkg>/commands.py``) and is
imported only when invoked, so ``r1probe --help`` stays fast.
"""

from __future__ import annotations

import importlib
import sys
import traceback

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
    "enhance": "r1probe.steering.enhance_cli:enhance",
    "eval": "r1probe.eval.commands:eval_cmd",
    "serve": "r1probe.eval.commands:serve",
    "compare": "r1probe.analysis.commands:compare",
    "distill": "r1probe.distill.commands:distill",
    "run": "r1probe.analysis.commands:run",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx):
        return [v for v in VERBS if self._load(v) is not None]

    def get_command(self, ctx, name):
        return self._load(name)

    @staticmethod
    def _load(name):
        target = VERBS.get(name)
        if target is None:
            return None
        mod, attr = target.split(":")
        try:
            module = importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name and mod.startswith(e.name):  # verb not built yet
                return None
            raise
        return getattr(module, attr, None)


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
    except click.ClickException as e:
        e.show()
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
