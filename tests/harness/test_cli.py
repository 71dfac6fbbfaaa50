"""The command line: help without heavy imports, the registries behind its names, no old paths."""
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


def test_every_registered_name_loads_and_a_new_one_is_accepted():
    from avalanche_cts.benchmarks import BENCHMARKS
    from avalanche_cts.harness import METHODS, RunConfig, register_method
    from avalanche_cts.models.blip_presets import BLIP_PRESETS
    from avalanche_cts.models.presets import PRESETS
    from avalanche_cts.scorers import SCORERS, TokenScorer, get_scorer
    from avalanche_cts.selectors import SELECTORS, SampleSelector, get_selector

    for registry in (BENCHMARKS, METHODS, PRESETS, BLIP_PRESETS, SCORERS, SELECTORS):
        for name in registry.names():
            assert registry.load(name) is not None, (registry.kind, name)
    assert all(isinstance(get_scorer(n), TokenScorer) and get_scorer(n).name == n
               for n in SCORERS.names())
    assert all(isinstance(get_selector(n), SampleSelector) for n in SELECTORS.names())
    with pytest.raises(ValueError, match="unknown method 'mine'"):
        METHODS.load("mine")
    with pytest.raises(ValueError, match="RunConfig.method must be one of"):
        RunConfig(method="mine")
    register_method("mine")(lambda cfg, model, evaluator: None)
    try:
        assert RunConfig(method="mine").method == "mine"
    finally:
        METHODS._entries.pop("mine")


def test_old_module_paths_are_gone_and_the_cli_runs_as_a_module():
    for old in ("avalanche_cts.experiment", "avalanche_cts.cli", "avalanche_cts.buffer",
                "avalanche_cts.vl", "avalanche_cts.harness.names"):
        out = subprocess.run([sys.executable, "-c", f"import {old}"], capture_output=True,
                             text=True)
        assert "ModuleNotFoundError" in out.stderr, old
    out = subprocess.run([sys.executable, "-m", "avalanche_cts.harness.cli", "--help"],
                         capture_output=True, text=True)
    assert out.returncode == 0 and "avalanche-cts" in out.stdout, out.stderr


def test_demo_option_errors_are_one_line(capsys):
    from avalanche_cts.harness.cli import main

    assert main(["demo", "--budgets", "1.5", "--jobs", "1"]) == 2
    err = capsys.readouterr().err
    assert "RunConfig.budget must be a fraction in (0, 1]" in err and err.count("\n") == 2


def test_pretrain_names_are_the_embedded_pretrainings_and_a_bad_one_is_named():
    from avalanche_cts.harness.cli import PRETRAININGS, main
    from avalanche_cts.harness.pretrain import BACKBONES

    assert sorted(PRETRAININGS) == sorted([*BACKBONES, "scenes"])
    with pytest.raises(ValueError, match="no embedded pretraining named 'imagenet': use one of"):
        main(["--debug", "pretrain", "imagenet"])
