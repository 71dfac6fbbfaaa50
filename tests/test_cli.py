"""The command line: help without heavy imports, names in step with the registries, old paths."""
import subprocess
import sys

import pytest


def test_help_imports_neither_torch_nor_avalanche():
    code = ("import sys\n"
            "from avalanche_cts.harness.cli import build_parser\n"
            "p = build_parser()\n"
            "for cmd in ([], ['demo'], ['run'], ['pretrain']):\n"
            "    try:\n"
            "        p.parse_args(cmd + ['--help'])\n"
            "    except SystemExit:\n"
            "        pass\n"
            "heavy = [m for m in ('torch', 'avalanche', 'timm') if m in sys.modules]\n"
            "assert not heavy, heavy\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "--train-per-class" in out.stdout and "(default: 300)" in out.stdout
    assert "``" not in out.stdout  # no reST markup in the help


def test_static_names_match_the_registries():
    from avalanche_cts.benchmarks import BENCHMARKS
    from avalanche_cts.harness import methods, names
    from avalanche_cts.scorers import list_scorers
    from avalanche_cts.selectors import list_selectors

    assert sorted(names.METHODS) == methods.list_methods()
    assert sorted(names.SELECTORS) == list_selectors()
    assert sorted(names.SCORERS) == list_scorers()
    assert sorted(names.BENCHMARK_NAMES) == sorted(BENCHMARKS)


def test_moved_modules_keep_their_import_paths():
    import avalanche_cts.harness.runner as runner

    with pytest.warns(DeprecationWarning, match="moved to avalanche_cts.harness.runner"):
        from avalanche_cts.experiment import run
    assert run is runner.run
    from avalanche_cts.pretrain import load_pretrained
    from avalanche_cts.harness.pretrain import load_pretrained as new

    assert load_pretrained is new


def test_demo_option_errors_are_one_line(capsys):
    from avalanche_cts.harness.cli import main

    assert main(["demo", "--budgets", "1.5", "--jobs", "1"]) == 2
    err = capsys.readouterr().err
    assert "RunConfig.budget must be a fraction in (0, 1]" in err and err.count("\n") == 2
