import os
import subprocess
import sys

import pytest


def run(*args, env=None):
    return subprocess.run([sys.executable, "-m", "r1probe", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=300)


def test_version_and_help():
    r = run("--version")
    assert r.returncode == 0 and "0.1.0" in r.stdout
    r = run("--help")
    assert r.returncode == 0 and "models" in r.stdout


def test_models_list_names_the_embedded_model():
    r = run("models", "list")
    assert r.returncode == 0 and "builtin:qwen2.5-coder-0.5b-instruct" in r.stdout


@pytest.mark.parametrize("spec,needle", [
    ("builtin:nope", "unknown builtin"),
    ("/no/such/dir", "no such file"),
    ("./missing.gguf", "no such file"),
    ("not a spec!", "hub id"),
])
def test_bad_specs_give_one_line_and_no_traceback(spec, needle):
    r = run("models", "show", spec)
    assert r.returncode == 2
    assert needle in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_debug_shows_traceback():
    r = run("--debug", "models", "show", "builtin:nope")
    assert r.returncode == 2 and "Traceback" in r.stderr


def test_corrupted_gguf_file_spec(tmp_path):
    g = tmp_path / "broken.gguf"
    g.write_bytes(b"not a gguf at all")
    r = run("models", "show", str(g), env={"R1PROBE_CACHE": str(tmp_path / "c")})
    assert r.returncode == 2 and "GGUF" in r.stderr and "Traceback" not in r.stderr


def test_tiny_model_show(tiny_llama):
    r = run("models", "show", str(tiny_llama), "--dtype", "float32")
    assert r.returncode == 0, r.stderr
    assert "llama" in r.stdout and "float32" in r.stdout


def test_help_imports_no_verb_module():
    code = ("import sys\nfrom r1probe.cli import VERBS, main\nmain(['--help'])\n"
            "loaded = sorted({t.split(':')[0] for t in VERBS.values()} & set(sys.modules))\n"
            "print('LOADED', loaded, 'torch' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "LOADED [] False" in r.stdout


def test_help_lists_every_verb_with_its_own_summary():
    import inspect

    from r1probe.cli import VERBS, load_verb, verb_help

    for verb in VERBS:
        command = load_verb(verb)
        own = inspect.cleandoc(command.short_help or command.help or "")
        assert inspect.cleandoc(verb_help(verb)) == own, verb


def test_a_broken_verb_fails_loudly(monkeypatch, capsys):
    from r1probe import cli

    monkeypatch.setitem(cli.VERBS, "broken", "r1probe.no_such_module:broken")
    with pytest.raises(SystemExit) as e:
        cli.main(["broken"])
    assert e.value.code == 1
    err = capsys.readouterr().err
    assert "'broken' verb" in err and "r1probe.no_such_module" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1

    monkeypatch.setitem(cli.VERBS, "broken", "r1probe.errors:no_such_command")
    with pytest.raises(SystemExit) as e:
        cli.main(["broken"])
    assert e.value.code == 1 and "no_such_command" in capsys.readouterr().err
