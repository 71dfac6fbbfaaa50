"""The harness and the command line name bad input (second round): ``--set`` against grid
axes, names that would write outside the output folder, option keys a method does not read,
runs whose model or data cannot be identified, ``~`` in output folders, grid cells checked
before the first runs, and numbers of another type or out of range.

``CASES``: (case id, a call with one bad input, the exception type, a phrase of the message).
``CLI_CASES``: command lines that end in one line and exit status 2. The legitimate variants
of each case are tested below the tables.
"""
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from avalanche_cts import create_model
from avalanche_cts.benchmarks import check_benchmark_arguments, synthetic_benchmark
from avalanche_cts.harness.config import RunConfig

torch.set_num_threads(1)

BENCH = dict(name="synthetic", n_experiences=2, n_classes=4, train_per_class=2,
             test_per_class=1, image_size=8, channels=1)
GOOD_CONFIG = """
benchmark: {name: synthetic, n_experiences: 2, n_classes: 4, train_per_class: 2,
            test_per_class: 1, image_size: 8, channels: 1}
run: {model: vit_digits_micro, method: naive, epochs: 1}
grid: {seed: [0, 1]}
"""


def _tiny():
    return synthetic_benchmark(2, n_classes=4, train_per_class=2, test_per_class=1,
                               image_size=8, channels=1)


def _cfg(tmp, **kw):
    return RunConfig(**{"method": "naive", "model": "vit_digits_micro", "epochs": 1,
                        "out_dir": str(tmp / "run"), **kw})


def _model(seed):
    torch.manual_seed(seed)
    return create_model("vit_digits_micro", num_classes=4)


def _run(cfg, bm, **kw):
    from avalanche_cts.harness import run

    return run(cfg, bm, log=None, **kw)


def _twice(tmp, first: dict, second: dict, bm=_tiny):
    """Run into one folder with ``first`` then ``second`` keyword arguments of ``run``."""
    _run(_cfg(tmp), bm(**first.pop("bm", {})), **first)
    return _run(_cfg(tmp), bm(**second.pop("bm", {})), **second)


class _Pairs(torch.utils.data.TensorDataset):
    @property
    def targets(self):
        return self.tensors[1].tolist()


def _plain(seed=0):
    """A plain Avalanche ``nc_benchmark`` (no ``info``) of random 8 x 8 images."""
    from avalanche.benchmarks import nc_benchmark

    g = torch.Generator().manual_seed(seed)
    x, y = torch.rand(16, 1, 8, 8, generator=g), torch.arange(16) % 4
    return nc_benchmark(_Pairs(x, y), _Pairs(x[:8], y[:8]), n_experiences=2,
                        task_labels=False, seed=0)


class _Opaque:
    """An input the fingerprint cannot read."""


def _unidentified_stream():
    bm = _plain()
    exps = [SimpleNamespace(dataset=[(_Opaque(), 0)], classes_in_this_experience=[0])]
    return SimpleNamespace(train_stream=exps, test_stream=exps, wrapped=bm)


def _resume_unidentified(tmp):
    from avalanche_cts.harness.identity import stream_fingerprint
    from avalanche_cts.harness.runner import check_reuse

    settings = dict(run={}, data=stream_fingerprint(_unidentified_stream()))
    check_reuse(settings, settings, tmp / "state.pt", "delete it")


def _file(tmp, name, text):
    path = Path(tmp) / name
    path.write_text(text)
    return str(path)


def _cells(tmp, text, overrides=()):
    from avalanche_cts.harness.grid import expand_cells, load_config

    return expand_cells(load_config(_file(tmp, "c.yaml", text), overrides))


def _grid(tmp, grid=None, run=None, overrides=()):
    """The cells of ``GOOD_CONFIG`` with another ``grid`` and more ``run`` settings."""
    text = GOOD_CONFIG.replace("{seed: [0, 1]}", grid or "{seed: [0, 1]}")
    return _cells(tmp, text.replace("epochs: 1}", f"epochs: 1, {run}}}") if run else text,
                  overrides)


def _execute_key(tmp, key):
    from avalanche_cts.harness.execute import execute_cells
    from avalanche_cts.harness.grid import Cell

    execute_cells([Cell(0, key, _cfg(tmp, out_dir=None), dict(BENCH), {})], tmp / "out",
                  log=None)


def _options(method, **options):
    return lambda t: RunConfig(method=method, options=options)


CASES = [
    # 1. --set against grid axes
    ("grid set on a seed axis", lambda t: _grid(t, overrides=["seed=3"]), ValueError,
     "--set seed=... sets 'seed', an axis of the grid"),
    ("grid set on a method axis", lambda t: _grid(
        t, "{method: [naive, coreset]}", overrides=["method=coreset"]), ValueError,
     "sets 'method', an axis"),
    ("grid set a mapping holding an axis", lambda t: _grid(
        t, "{method: [coreset], options.buffer.batch_size: [4, 8]}",
        overrides=["options={buffer: {batch_size: 2}}"]), ValueError,
     "sets 'options.buffer.batch_size', an axis"),
    ("grid set a benchmark axis", lambda t: _grid(
        t, "{benchmark.n_experiences: [1, 2]}", overrides=["benchmark.n_experiences=4"]),
     ValueError, "sets 'benchmark.n_experiences'"),
    # 2. names that would write outside the output folder
    ("grid _name ..", lambda t: _grid(t, "[{_name: '..', seed: [0]}]"), ValueError,
     "grid cell '..' (from _name '..'): a name that becomes a folder must be one folder name"),
    ("grid _name with a slash", lambda t: _grid(t, "[{_name: 'a/../../b', seed: [0]}]"),
     ValueError, "must be one folder name inside the output folder"),
    ("grid _name absolute", lambda t: _grid(t, f"[{{_name: '{t}/abs', seed: [0]}}]"),
     ValueError, "an absolute path"),
    ("config name absolute", lambda t: _cells(t, f"name: {t}/abs\n" + GOOD_CONFIG), ValueError,
     "(the default output folder is results/<name>; or set out)"),
    ("config name ..", lambda t: _cells(t, "name: '..'\n" + GOOD_CONFIG), ValueError,
     "name '..'"),
    ("execute cell key ..", lambda t: _execute_key(t, ".."), ValueError,
     "grid cell 0 named '..'"),
    ("execute cell key absolute", lambda t: _execute_key(t, str(t / "elsewhere")), ValueError,
     "must be one folder name"),
    # 3. option keys a method does not read
    ("options typo", _options("coreset", bufer={}), ValueError,
     "'bufer', which method 'coreset' does not read; valid keys: ['base', 'base_options', "
     "'buffer', 'plugin', 'template']"),
    ("options buffer on naive", _options("naive", buffer={"batch_size": 4}), ValueError,
     "'buffer', which method 'naive' does not read; valid keys: ['template']"),
    ("options buffer on replay", _options("replay", buffer={}), ValueError,
     "'buffer', which method 'replay' does not read; valid keys: ['base', 'base_options']"),
    ("options buffer key typo", _options("coreset", buffer={"bach_size": 4}), ValueError,
     "RunConfig.options.buffer has ['bach_size'], which method 'coreset' does not read"),
    ("options buffer key set by run", _options("core_tokenset", buffer={"seed": 1}),
     ValueError, "seed is set from the RunConfig fields, not options"),
    ("options plugin key typo", _options("coreset", plugin={"mem_wieght": 2}), ValueError,
     "RunConfig.options.plugin has ['mem_wieght']"),
    ("options buffer not a mapping", _options("coreset", buffer=128), ValueError,
     "options.buffer of method 'coreset' must be a mapping"),
    ("options inflora typo", _options("inflora", rnk=3), ValueError,
     "'rnk', which method 'inflora' does not read; valid keys: ['blocks'"),
    ("grid shared option typo", lambda t: _grid(t, run="options: {bufer: {batch_size: 4}}"),
     ValueError, "run.options has 'bufer', which no method of the grid (naive) reads"),
    ("grid shared option nobody reads", lambda t: _grid(
        t, run="options: {buffer: {batch_size: 4}}"), ValueError,
     "run.options has 'buffer', which no method of the grid (naive) reads"),
    ("grid axis option on naive", lambda t: _grid(t, "{options.buffer.batch_size: [4]}"),
     ValueError, "grid cell 'batch_size=4': RunConfig.options has 'buffer'"),
    # 4. runs whose model or data cannot be identified
    ("run other weights in one folder", lambda t: _twice(
        t, dict(model=_model(0)), dict(model=_model(1))), ValueError,
     "was made with other settings (model.fingerprint:"),
    ("run other plain stream in one folder", lambda t: _twice(
        t, dict(bm=dict(seed=0)), dict(bm=dict(seed=1)), bm=_plain), ValueError,
     "was made with other settings (data.fingerprint:"),
    ("run unidentified data is not reused", _resume_unidentified, ValueError,
     "this run's data cannot be identified (a sample holds a _Opaque"),
    ("run config a dict", lambda t: _run({"method": "naive"}, _tiny()), TypeError,
     "run() takes a RunConfig, got dict"),
    ("run model a name", lambda t: _run(_cfg(t), _tiny(), model="vit_digits_micro"),
     TypeError, "run(model=...) takes a torch.nn.Module, got str"),
    ("run data a list", lambda t: _run(_cfg(t), _tiny(), data=["synthetic"]), TypeError,
     "run(data=...) takes a dict"),
    ("run benchmark a list", lambda t: _run(_cfg(t), [1, 2]), TypeError,
     "takes a benchmark with train_stream and test_stream"),
    # 10b. benchmark arguments checked without loading data
    ("benchmark n_experiences 0", lambda t: check_benchmark_arguments(
        "synthetic", {"n_experiences": 0}), ValueError,
     "benchmark 'synthetic': n_experiences must be a positive integer, got 0"),
    ("benchmark per-class count a string", lambda t: check_benchmark_arguments(
        "fmnist", {"train_per_class": "100"}), ValueError, "train_per_class must be a positive"),
    ("benchmark heldout negative", lambda t: check_benchmark_arguments(
        "fmnist", {"heldout_per_class": -1}), ValueError, "heldout_per_class must be an integer"),
    ("benchmark seed 2**64", lambda t: check_benchmark_arguments(
        "synthetic", {"seed": 2 ** 64}), ValueError, "seed must be an integer in [0, 2**32 - 1]"),
    ("benchmark root missing", lambda t: check_benchmark_arguments(
        "imagenet_r", {"root": str(t / "none")}), FileNotFoundError, "is not a folder"),
    ("benchmark root not given", lambda t: check_benchmark_arguments("imagenet_r", {}),
     ValueError, "missing a required argument: 'root'"),
    ("benchmark unknown argument", lambda t: check_benchmark_arguments(
        "synthetic", {"n_clases": 4}), ValueError, "has no settings ['n_clases']"),
    # 10c. numbers of another type or out of range
    ("config seed 2**64", lambda t: RunConfig(seed=2 ** 64), ValueError,
     "RunConfig.seed must be an integer in [0, 2**32 - 1], got 18446744073709551616"),
    ("config seed negative numpy", lambda t: RunConfig(seed=np.int64(-1)), ValueError,
     "RunConfig.seed must be an integer in [0, 2**32 - 1], got -1"),
    ("config seed bool", lambda t: RunConfig(seed=True), ValueError, "RunConfig.seed must be"),
    ("config seed numpy bool", lambda t: RunConfig(seed=np.bool_(True)), ValueError,
     "RunConfig.seed must be"),
    ("config seed float", lambda t: RunConfig(seed=3.0), ValueError, "got 3.0"),
    ("config seed one-element array", lambda t: RunConfig(seed=np.array([3])), ValueError,
     "RunConfig.seed must be"),
    ("config epochs torch float", lambda t: RunConfig(epochs=torch.tensor(2.0)), ValueError,
     "RunConfig.epochs must be an integer >= 1, got 2.0"),
    ("config lr numpy nan", lambda t: RunConfig(lr=np.float32("nan")), ValueError,
     "RunConfig.lr must be"),
]


@pytest.mark.parametrize("case, call, exc, phrase", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_named(case, call, exc, phrase, tmp_path):
    from conftest import assert_named

    assert_named(call, exc, phrase, tmp_path)


def _config(tmp, text=GOOD_CONFIG):
    return _file(tmp, "c.yaml", text)


CLI_CASES = [
    # (case id, argv from tmp_path, a phrase of the one-line error)
    ("run set seed on a grid axis", lambda t: [
        "run", "--config", _config(t), "--set", "seed=3", "--set", "epochs=1"],
     "--set seed=... sets 'seed', an axis of the grid"),
    ("run set method on a grid axis", lambda t: [
        "run", "--config", _config(t, GOOD_CONFIG.replace("{seed: [0, 1]}",
                                                          "{method: [naive], seed: [0]}")),
        "--set", "method=coreset"], "sets 'method', an axis of the grid"),
    ("run root on a grid axis", lambda t: [
        "run", "--config", _config(t, GOOD_CONFIG.replace("{seed: [0, 1]}",
                                                          f"{{benchmark.root: ['{t}']}}")),
        "--root", str(t)], "sets 'benchmark.root', an axis"),
    ("run grid name ..", lambda t: [
        "run", "--config", _config(t, GOOD_CONFIG.replace(
            "{seed: [0, 1]}", "[{_name: '..', seed: [0]}]")), "--out", str(t / "o")],
     "grid cell '..' (from _name '..')"),
    ("run config name absolute", lambda t: [
        "run", "--config", _config(t, f"name: {t}/abs\n" + GOOD_CONFIG)],
     "a name that becomes a folder must be one folder name"),
    ("run options typo", lambda t: [
        "run", "--config", _config(t), "--set", "options={bufer: {batch_size: 4}}"],
     "run.options has 'bufer'"),
    ("run options buffer key typo", lambda t: [
        "run", "--config", _config(t), "--set", "method=coreset",
        "--set", "options={buffer: {bach_size: 4}}"],
     "RunConfig.options.buffer has ['bach_size']"),
    ("run seed 2**64", lambda t: [
        "run", "--config", _config(t, GOOD_CONFIG.replace("grid: {seed: [0, 1]}", "")),
        "--set", "seed=18446744073709551616"], "an integer in [0, 2**32 - 1]"),
    ("run later cell bad benchmark argument", lambda t: [
        "run", "--config", _config(t, GOOD_CONFIG.replace(
            "{seed: [0, 1]}", "[{seed: [0]}, {seed: [1], benchmark.n_experiences: [0]}]")),
        "--out", str(t / "o")], "n_experiences must be a positive integer, got 0"),
]


@pytest.mark.parametrize("case, argv, phrase", CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_command_line_error_is_one_line(case, argv, phrase, tmp_path, capsys):
    from avalanche_cts.harness.cli import main

    code = main(argv(tmp_path))
    err = capsys.readouterr().err
    assert code == 2 and phrase in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) <= 2, err
    assert not (tmp_path / "o").exists() and not (tmp_path / "abs").exists()


# ------------------------------------------------------------------ legitimate variants
def test_grid_with_plain_names_and_set_on_other_keys(tmp_path):
    cells = _grid(tmp_path, "[{_name: inflora-10, seed: [0, 1]}, {method: [coreset], seed: [0]}]",
                  overrides=["epochs=2", "benchmark.n_classes=4"])
    assert [c.key for c in cells] == ["inflora-10-seed=0", "inflora-10-seed=1",
                                      "method=coreset-seed=0"]
    assert [c.cfg.epochs for c in cells] == [2, 2, 2]


def test_shared_options_reach_the_methods_that_read_them(tmp_path):
    naive, coreset = _grid(tmp_path, "{method: [naive, coreset]}",
                           run="options: {buffer: {batch_size: 4}}")
    assert naive.cfg.options == {} and coreset.cfg.options == {"buffer": {"batch_size": 4}}


def test_valid_options_are_accepted():
    cfg = RunConfig(method="core_tokenset", options=dict(
        buffer={"batch_size": 8, "num_workers": 0}, plugin={"mem_weight": 2.0},
        template={"num_beams": 3}))
    assert cfg.options["plugin"] == {"mem_weight": 2.0}
    assert RunConfig(method="inflora", options={"rank": 4}).options == {"rank": 4}


def test_out_dir_with_tilde_lands_in_home(tmp_path, monkeypatch):
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir(), work.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    _run(_cfg(tmp_path, out_dir="~/x"), _tiny())
    assert sorted(p.name for p in (home / "x").iterdir()) == ["accuracy.png", "result.json",
                                                              "state.pt"]
    assert not (work / "~").exists()


def test_same_weights_resume_and_other_weights_are_recorded(tmp_path):
    from avalanche_cts.harness.identity import weights_fingerprint

    lines = []
    first = _run(_cfg(tmp_path), _tiny(), model=_model(0))
    from avalanche_cts.harness import run

    again = run(_cfg(tmp_path), _tiny(), model=_model(0), log=lines.append)
    assert any("resumed" in line for line in lines), lines
    assert again["acc_matrix"] == first["acc_matrix"]
    assert first["settings"]["model"] == weights_fingerprint(_model(0))
    changed = _model(0)
    with torch.no_grad():
        changed.head.bias[0] += 1e-3  # one number: another fingerprint
    assert weights_fingerprint(changed)["fingerprint"] != first["settings"]["model"]["fingerprint"]
    assert "model" not in _run(_cfg(tmp_path / "b"), _tiny())["settings"]  # a preset: named


def test_same_plain_stream_resumes(tmp_path):
    from avalanche_cts.harness import run

    first = _run(_cfg(tmp_path), _plain(0))
    lines = []
    run(_cfg(tmp_path), _plain(0), log=lines.append)
    assert any("resumed" in line for line in lines), lines
    assert first["settings"]["data"]["train_sizes"] == [8, 8]


def test_numbers_of_other_types_become_python_numbers():
    cfg = RunConfig(seed=np.int64(3), lr=np.float32(0.5), epochs=torch.tensor(2),
                    budget=torch.tensor(0.25))
    assert (cfg.seed, cfg.epochs) == (3, 2) and type(cfg.seed) is int and type(cfg.epochs) is int
    assert type(cfg.lr) is float and cfg.budget == 0.25
    json.dumps(cfg.shaping())  # a result can be written
    assert RunConfig(seed=2 ** 32 - 1).seed == 2 ** 32 - 1


def test_a_later_cell_is_checked_before_the_first_runs(tmp_path):
    from avalanche_cts.harness.execute import execute_cells

    good, bad = _grid(tmp_path)
    bad.benchmark["n_experiences"] = 0
    with pytest.raises(ValueError, match="n_experiences must be a positive integer"):
        execute_cells([good, bad], tmp_path / "out", log=None)
    assert not (tmp_path / "out" / good.key).exists()


def test_command_line_hides_third_party_warnings_only(tmp_path):
    """A tiny run under ``-W always``: Avalanche's "No loggers specified" is hidden and the
    replay baseline makes no call of a deprecated Avalanche function; the project's own
    warning (a memory below one record) still shows."""
    config = _config(tmp_path, GOOD_CONFIG.replace("method: naive", "method: coreset")
                     .replace("{seed: [0, 1]}", "{method: [coreset, replay]}"))
    env = dict(os.environ, OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(Path(__file__).parents[2]),
                                           os.environ.get("PYTHONPATH", "")]))
    env.pop("PYTHONWARNINGS", None)
    proc = subprocess.run(
        [sys.executable, "-W", "always", "-m", "avalanche_cts.harness.cli", "run", "--config",
         config, "--out", str(tmp_path / "o")], capture_output=True, text=True, env=env,
        timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "the memory holds no record" in proc.stderr, proc.stderr
    assert "No loggers specified" not in proc.stderr, proc.stderr
    assert "Call to deprecated function" not in proc.stderr, proc.stderr
    assert len(list((tmp_path / "o").glob("*/result.json"))) == 2  # the replay cell ran too


def test_command_line_out_with_tilde_lands_in_home(tmp_path, monkeypatch):
    from avalanche_cts.harness.cli import main

    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir(), work.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    config = _config(tmp_path, GOOD_CONFIG.replace("{seed: [0, 1]}", "{seed: [0]}"))
    assert main(["run", "--config", config, "--out", "~/y"]) == 0
    assert (home / "y" / "seed=0" / "result.json").is_file() and not (work / "~").exists()
