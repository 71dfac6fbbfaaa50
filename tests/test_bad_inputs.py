"""Every public entry point names bad input and its fix: one table, one row per case.

Each row of ``CASES``: (case id, a call with one bad input, the exception type, a phrase of
the message). ``CLI_CASES``: command lines that must end in one line and exit status 2
naming the option or file. ``WARNINGS``: legitimate inputs with a surprising outcome, which
run and warn.
"""
import json
from types import SimpleNamespace

import pytest
import torch

from avalanche_cts import CoreTokensetBuffer, CoreTokensetReplayPlugin, create_model
from avalanche_cts.benchmarks import cluttered_fashion_mnist, make_benchmark, split_fashion_mnist
from avalanche_cts.benchmarks import synthetic_benchmark
from avalanche_cts.harness.checkpoint import load_run_state
from avalanche_cts.models.loading import load_backbone, load_weights
from avalanche_cts.harness.config import RunConfig
from avalanche_cts.tokens.normalization import Normalization
from avalanche_cts.tokens.patches import rank_tokens
from avalanche_cts.scorers import get_scorer
from avalanche_cts.selectors import ClassFeatures, get_selector

torch.set_num_threads(1)


def _micro():
    torch.manual_seed(0)
    return create_model("vit_digits_micro")


def _images(n=2, size=8):
    return torch.rand(n, 1, size, size)


def _buffer(**kw):
    return CoreTokensetBuffer(**{"budget_fraction": 0.1, **kw})


def _features(n=4, bad=False):
    emb = torch.randn(n, 8)
    if bad:
        emb[1, 0] = float("nan")
    return ClassFeatures(emb, torch.randn(n, 3), torch.zeros(n, dtype=torch.long))


def _filled_state():
    from conftest import make_digits_benchmark

    bm = make_digits_benchmark()
    buf = _buffer(token_retention=0.5)
    buf.post_adapt(SimpleNamespace(model=_micro(), device="cpu"), bm.train_stream[0])
    return buf.state_dict()


def _corrupt(state, **changes):
    state = dict(state, groups=[dict(g) for g in state["groups"]])
    for key, fn in changes.items():
        fn(state)
    return state


def _load(state, buf=None):
    (buf or _buffer(token_retention=0.5)).load_state_dict(state)


def _post_adapt_images(images, labels):
    from avalanche.benchmarks.utils import _make_taskaware_tensor_classification_dataset

    data = _make_taskaware_tensor_classification_dataset(images, labels)
    exp = SimpleNamespace(dataset=data, current_experience=3)
    _buffer().post_adapt(SimpleNamespace(model=_micro(), device="cpu"), exp)


def _nan_images():
    x = (torch.rand(6, 1, 8, 8) * 255).round() / 255
    x[4, 0, 3, 3] = float("nan")
    return x


def _file(tmp, name, data: bytes):
    path = tmp / name
    path.write_bytes(data)
    return path


def _post_adapt(buffer, images, labels):
    from avalanche.benchmarks.utils import _make_taskaware_tensor_classification_dataset

    exp = SimpleNamespace(dataset=_make_taskaware_tensor_classification_dataset(images, labels),
                          current_experience=0)
    buffer.post_adapt(SimpleNamespace(model=_micro(), device="cpu"), exp)
    return buffer


def _pixels(n, scale=1.0):
    """``n`` exact 8-bit grey 8 x 8 images in [0, 1] (times ``scale``)."""
    return (torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 255).round() \
        / 255 * scale


def _stored(tmp, content: str):
    from avalanche_cts.harness.runner import load_result

    path = _file(tmp, "result.json", content.encode())
    return load_result(path, {"run": {}, "data": {}})


def _nan_gradlrp():
    x = _images()
    x[1, 0, 2, 2] = float("nan")
    get_scorer("gradlrp").score(_micro(), x, torch.tensor([1, 2]))


def _nonfinite_weights():
    from avalanche_cts.harness.runner import _check_weights

    m = _micro()
    with torch.no_grad():
        m.head.weight[0, 0] = float("inf")
    _check_weights(m, 2, RunConfig(lr=5.0))


def _run_into(tmp, out):
    from avalanche_cts.harness import run

    bm = synthetic_benchmark(2, n_classes=4, train_per_class=2, test_per_class=1,
                             image_size=8, channels=1)
    run(RunConfig(method="naive", model="vit_digits_micro", epochs=1, out_dir=str(out)), bm,
        log=None)


def _avalanche_replay():
    from avalanche.training.plugins import ReplayPlugin

    ReplayPlugin(mem_size=200, storage_policy=_buffer())


CASES = [
    # CoreTokensetBuffer
    ("buffer budget string", lambda t: _buffer(budget_fraction="0.01"), ValueError,
     "budget_fraction must be a number in (0, 1]"),
    ("buffer budget over 1", lambda t: _buffer(budget_fraction=1.5), ValueError,
     "budget_fraction must be a number in (0, 1]"),
    ("buffer budget bytes negative", lambda t: CoreTokensetBuffer(budget_bytes=-5), ValueError,
     "budget_bytes must be a positive integer"),
    ("buffer two budgets", lambda t: CoreTokensetBuffer(budget_bytes=10, budget_fraction=0.1),
     ValueError, "exactly one of budget_bytes or budget_fraction"),
    ("buffer retention zero", lambda t: _buffer(token_retention=0.0), ValueError,
     "token_retention must be a number in (0, 1]"),
    ("buffer retention nan", lambda t: _buffer(token_retention=float("nan")), ValueError,
     "token_retention must be a number in (0, 1]"),
    ("buffer batch size zero", lambda t: _buffer(batch_size=0), ValueError,
     "batch_size must be an integer >= 1"),
    ("buffer token choice", lambda t: _buffer(token_choice="best"), ValueError,
     "token_choice must be one of"),
    ("buffer temperature", lambda t: _buffer(token_choice="gumbel", temperature=0), ValueError,
     "temperature must be a positive number"),
    ("compact tokens on a non-square grid", lambda t: rank_tokens(torch.rand(2, 12), "compact"),
     ValueError, "needs a square token grid, got 12 tokens per image; use 'topk'"),
    ("buffer unknown selector", lambda t: _buffer(selector="nope"), ValueError,
     "unknown sample selector 'nope'"),
    ("buffer unknown scorer", lambda t: _buffer(scorer="nope"), ValueError,
     "unknown token scorer 'nope'"),
    ("buffer normalization", lambda t: _buffer(normalization=((0.5,), (0.0,))), ValueError,
     "std positive"),
    ("buffer nan pixel", lambda t: _post_adapt_images(_nan_images(), torch.zeros(6).long()),
     ValueError, "sample 4 of experience 3 has NaN or infinite pixels"),
    ("buffer label outside head", lambda t: _post_adapt_images(
        torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 2, 12])), ValueError,
     "do not fit the model's head of 10 classes"),
    ("buffer wrong image size", lambda t: _post_adapt_images(
        torch.rand(4, 1, 10, 10), torch.zeros(4).long()), ValueError,
     "resize the data to 8 x 8"),
    ("buffer under Avalanche ReplayPlugin", lambda t: _avalanche_replay(), TypeError,
     "use avalanche_cts.CoreTokensetReplayPlugin(buffer)"),
    # load_state_dict
    ("state record with 0 tokens", lambda t: _load(_corrupt(
        _filled_state(), groups=lambda s: s["groups"][0].update(
            lengths=torch.zeros_like(s["groups"][0]["lengths"])))), ValueError,
     "record lengths must be in [1, 16]"),
    ("state position outside grid", lambda t: _load(_corrupt(
        _filled_state(), groups=lambda s: s["groups"][0].update(
            positions=s["groups"][0]["positions"].clone().fill_(1015)))), ValueError,
     "positions must be in [0, 16)"),
    ("state values vs lengths", lambda t: _load(_corrupt(
        _filled_state(), groups=lambda s: s["groups"][0].update(
            values=s["groups"][0]["values"][:-1]))), ValueError, "values are stored"),
    ("state over budget", lambda t: _load(_corrupt(
        _filled_state(), seen=lambda s: s.update(seen_bytes=100))), ValueError,
     "over its budget"),
    ("state other scorer", lambda t: _load(_filled_state(), _buffer(
        token_retention=0.5, scorer="rollout")), ValueError, "load with strict=False"),
    ("state dtype vs codec", lambda t: _load(_corrupt(
        _filled_state(), groups=lambda s: s["groups"][0].update(
            values=s["groups"][0]["values"].float()))), ValueError, "the codec torch.uint8"),
    ("state not a dict", lambda t: _load([1, 2]), ValueError, "a buffer state is a dict"),
    # CoreTokensetReplayPlugin
    ("plugin mem_weight nan", lambda t: CoreTokensetReplayPlugin(_buffer(), mem_weight=float("nan")),
     ValueError, "mem_weight must be a finite number >= 0"),
    ("plugin mem_weight negative", lambda t: CoreTokensetReplayPlugin(_buffer(), mem_weight=-1),
     ValueError, "mem_weight must be a finite number >= 0"),
    ("plugin replay mode", lambda t: CoreTokensetReplayPlugin(_buffer(), replay_mode="dense"),
     ValueError, "replay_mode must be one of"),
    ("plugin dropout", lambda t: CoreTokensetReplayPlugin(_buffer(), dropout=1.5), ValueError,
     "dropout (token keep rate) must be in (0, 1]"),
    ("plugin dropout fraction", lambda t: CoreTokensetReplayPlugin(_buffer(), dropout_fraction=2),
     ValueError, "dropout_fraction must be in [0, 1]"),
    ("plugin schedule", lambda t: CoreTokensetReplayPlugin(_buffer(), dropout_schedule="cosine"),
     ValueError, "dropout_schedule must be one of"),
    ("plugin batch size", lambda t: CoreTokensetReplayPlugin(_buffer(), batch_size_mem=0),
     ValueError, "batch_size_mem must be a positive integer"),
    ("plugin not our buffer", lambda t: CoreTokensetReplayPlugin(object()), TypeError,
     "must be a CoreTokensetBuffer"),
    # RunConfig (and so the CLI and YAML)
    ("config retention zero", lambda t: RunConfig(token_retention=0.0), ValueError,
     "RunConfig.token_retention must be None or a fraction in (0, 1]"),
    ("config epochs zero", lambda t: RunConfig(epochs=0), ValueError,
     "RunConfig.epochs must be an integer >= 1"),
    ("config replay budget 1.5", lambda t: RunConfig(method="replay", budget=1.5), ValueError,
     "RunConfig.budget must be a fraction in (0, 1]"),
    ("config token budget negative", lambda t: RunConfig(budget=-0.01), ValueError,
     "RunConfig.budget must be a fraction in (0, 1]"),
    ("config string budget", lambda t: RunConfig(budget="0.01"), ValueError,
     "RunConfig.budget must be"),
    ("config batch size zero", lambda t: RunConfig(batch_size=0), ValueError,
     "RunConfig.batch_size must be an integer >= 1"),
    ("config unknown method", lambda t: RunConfig(method="foo"), ValueError,
     "RunConfig.method must be one of"),
    ("config lr nan", lambda t: RunConfig(lr=float("nan")), ValueError,
     "RunConfig.lr must be a positive number"),
    ("config unknown key", lambda t: RunConfig.from_dict({"epoch": 3}), ValueError,
     "unknown run settings ['epoch']"),
    ("config logger", lambda t: RunConfig(loggers=["wandb"]), ValueError,
     "RunConfig.loggers must be a list of"),
    # scorers and selectors
    ("scorer label outside head", lambda t: get_scorer("gradlrp").score(
        _micro(), _images(), torch.tensor([1, 10])), ValueError,
     "do not fit the model's head of 10 classes"),
    ("scorer targets count", lambda t: get_scorer("rollout").score(
        _micro(), _images(), torch.tensor([1, 2, 3])), ValueError, "one per image"),
    ("scorer integer images", lambda t: get_scorer("random").score(
        _micro(), torch.zeros(2, 1, 8, 8, dtype=torch.uint8)), TypeError,
     "images must be a float tensor"),
    ("scorer wrong image size", lambda t: get_scorer("atman").score(_micro(), _images(size=12)),
     ValueError, "do not fit the model"),
    ("scorer atman factor", lambda t: get_scorer("atman", factor=1.5), ValueError,
     "factor (suppression strength) must be in [0, 1]"),
    ("scorer unknown", lambda t: get_scorer("lime"), ValueError, "unknown token scorer 'lime'"),
    ("selector negative k", lambda t: get_selector("herding").select(-1, 4, _features()),
     ValueError, "k must be an integer >= 0"),
    ("selector missing features", lambda t: get_selector("gradmatch").select(2, 4, None),
     ValueError, "needs the class's features"),
    ("selector nan features", lambda t: get_selector("craig").select(2, 4, _features(bad=True)),
     ValueError, "non-finite embeddings"),
    # create_model, load_backbone, checkpoint files
    ("model size not divisible", lambda t: create_model("vit_fmnist_tiny", img_size=30),
     ValueError, "use img_size=28"),
    ("model unknown", lambda t: create_model("vit_nope"), ValueError, "unknown model 'vit_nope'"),
    ("preset pretrained", lambda t: load_backbone("vit_fmnist_tiny", pretrained=True), ValueError,
     "has no published weights"),
    ("checkpoint empty", lambda t: load_weights(_micro(), _file(t, "w.pth", b"")), ValueError,
     "is empty"),
    ("checkpoint truncated", lambda t: load_weights(_micro(), _file(
        t, "w.safetensors", b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\":")), ValueError,
     "truncated or corrupt"),
    ("checkpoint missing", lambda t: load_weights(_micro(), t / "none.pth"), FileNotFoundError,
     "not found"),
    ("run state truncated", lambda t: load_run_state(_file(t, "state.pt", b"PK\x03\x04junk")),
     ValueError, "delete it to restart the run"),
    # benchmark builders
    ("fmnist data root typo", lambda t: split_fashion_mnist(data_root=t / "typo"),
     FileNotFoundError, "not found under data root"),
    ("fmnist negative per class", lambda t: split_fashion_mnist(train_per_class=-3), ValueError,
     "train_per_class must be a positive integer"),
    ("fmnist experiences", lambda t: split_fashion_mnist(n_experiences=3, train_per_class=5,
                                                         test_per_class=5), ValueError,
     "n_experiences must divide the 10 classes"),
    ("cluttered per class", lambda t: cluttered_fashion_mnist(test_per_class=0), ValueError,
     "test_per_class must be a positive integer"),
    ("synthetic classes", lambda t: synthetic_benchmark(n_classes=0), ValueError,
     "n_classes must be a positive integer"),
    ("benchmark unknown setting", lambda t: make_benchmark("fmnist", train_per_klass=3),
     ValueError, "has no settings ['train_per_klass']"),
    ("normalization channels", lambda t: Normalization((0.5, 0.5), (0.5, 0.5)).for_channels(3),
     ValueError, "normalisation has 2 channels"),
    # issue 19: what a newcomer tried
    ("buffer normalization text", lambda t: _buffer(normalization=("a", 0.5)), ValueError,
     "mean must be a number or one number per channel"),
    ("buffer 0-255 float pixels", lambda t: _post_adapt(_buffer(), _pixels(4, 255.0),
                                                        torch.zeros(4).long()), ValueError,
     "hold 0-255 pixel values"),
    ("model negative classes", lambda t: create_model("vit_digits_micro", num_classes=-1),
     ValueError, "num_classes must be an integer >= 0"),
    ("model channels zero", lambda t: create_model("vit_digits_micro", in_chans=0), ValueError,
     "in_chans must be an integer >= 1"),
    ("scorer nan image", lambda t: _nan_gradlrp(), ValueError,
     "image 1 has NaN or infinite values"),
    ("fmnist negative seed", lambda t: split_fashion_mnist(seed=-1), ValueError,
     "seed must be an integer >= 0"),
    ("cluttered negative seed", lambda t: cluttered_fashion_mnist(seed=-1), ValueError,
     "seed must be an integer >= 0"),
    ("synthetic negative seed", lambda t: synthetic_benchmark(seed=-1), ValueError,
     "seed must be an integer >= 0"),
    ("fmnist heldout takes all", lambda t: split_fashion_mnist(heldout_per_class=7000),
     ValueError, "leaves no training images"),
    ("imagenet empty root", lambda t: make_benchmark("imagenet_r", root=""), FileNotFoundError,
     "ImageNet-R root is empty"),
    ("pretrained unknown name", lambda t: _load_pretrained("mnist"), ValueError,
     "no embedded pretraining named 'mnist'"),
    ("pretrain data root typo", lambda t: _pretrain_backbone("fmnist", data_root=t / "none"),
     FileNotFoundError, "not found under data root"),
    ("blip pretraining unknown", lambda t: _load_blip_meta("blip_nope"), ValueError,
     "no embedded BLIP pretraining named 'blip_nope'"),
    ("config lr 1e30", lambda t: RunConfig(lr=1e30), ValueError,
     "RunConfig.lr must be a positive number up to 10"),
    ("config empty out_dir", lambda t: RunConfig(out_dir=""), ValueError,
     "RunConfig.out_dir must be None or a non-empty path"),
    ("config empty checkpoint", lambda t: RunConfig(checkpoint=" "), ValueError,
     "RunConfig.checkpoint must be None or a non-empty path"),
    ("run out_dir is a file", lambda t: _run_into(t, _file(t, "taken", b"x")), ValueError,
     "is a file: give a folder path"),
    ("run diverged weights", lambda t: _nonfinite_weights(), FloatingPointError,
     "left non-finite weights (head.weight) with lr 5: lower the learning rate"),
    ("result file a list", lambda t: _stored(t, "[1, 2]"), ValueError,
     "holds a JSON list, not a run's result"),
    ("result file empty dict", lambda t: _stored(t, "{}"), ValueError,
     "is not a result written by avalanche-cts"),
    ("result file no config", lambda t: _stored(t, json.dumps(dict(
        settings={}, acc_matrix=[[1.0]], final_acc=1.0, avg_inc_acc=1.0, forgetting=0.0,
        memory_bytes=0, wall_time_s=1.0))), ValueError, "malformed: config)"),
    ("result file bad json", lambda t: _stored(t, "{"), ValueError,
     "result.json is not valid JSON"),
]


def _load_pretrained(name):
    from avalanche_cts.harness import load_pretrained

    load_pretrained(name)


def _pretrain_backbone(name, **kw):
    from avalanche_cts.harness.pretrain import pretrain_backbone

    pretrain_backbone(name, **kw)


def _load_blip_meta(name):
    from avalanche_cts.harness.pretrain_vl import blip_meta

    blip_meta(name)


@pytest.mark.parametrize("case, call, exc, phrase", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_named(case, call, exc, phrase, tmp_path):
    from conftest import assert_named

    assert_named(call, exc, phrase, tmp_path)


def test_table_covers_the_entry_points():
    assert len(CASES) >= 40
    kinds = {c[0].split()[0] for c in CASES}
    assert {"buffer", "state", "plugin", "config", "scorer", "selector", "model",
            "checkpoint", "fmnist"} <= kinds


GOOD_CONFIG = """
benchmark: {name: synthetic, n_experiences: 2, n_classes: 4, image_size: 8, channels: 1}
run: {model: vit_digits_micro, method: naive, epochs: 1}
grid: {seed: [0, 1]}
"""


def _config(tmp, text=GOOD_CONFIG, name="c.yaml"):
    return str(_file(tmp, name, text.encode()))


CLI_CASES = [
    # (case id, argv from tmp_path, a phrase of the one-line error)
    ("demo repeated seed", lambda t: ["demo", "--seeds", "0", "0"], "--seeds lists 0 twice"),
    ("demo repeated method", lambda t: ["demo", "--methods", "naive", "naive"],
     "--methods lists 'naive' twice"),
    ("demo repeated budget", lambda t: ["demo", "--budgets", "0.05", "0.05"],
     "--budgets lists 0.05 twice"),
    ("demo empty out", lambda t: ["demo", "--out", ""], "--out is empty"),
    ("demo empty data root", lambda t: ["demo", "--data-root", ""], "--data-root is empty"),
    ("demo out is a file", lambda t: ["demo", "--out", str(_file(t, "f", b"x"))],
     "is a file: give a folder path"),
    ("demo out under a file", lambda t: ["demo", "--out", str(_file(t, "f", b"x") / "sub")],
     "lies under the file"),
    ("demo data root missing", lambda t: ["demo", "--data-root", str(t / "none")],
     "no such folder"),
    ("demo lr 1e30", lambda t: ["demo", "--lr", "1e30", "--jobs", "1"],
     "RunConfig.lr must be a positive number up to 10"),
    ("demo unknown option", lambda t: ["demo", "--no-such-option"], "unrecognized arguments"),
    ("pretrain data root missing", lambda t: ["pretrain", "fmnist", "--data-root",
                                              "/nonexistent/dir"], "no such folder"),
    ("run config is a folder", lambda t: ["run", "--config", str(t)], "is a folder, not a file"),
    ("run config missing", lambda t: ["run", "--config", str(t / "none.yaml")], "no such file"),
    ("run malformed yaml", lambda t: ["run", "--config", _config(t, "run: {epochs: 1\n")],
     "not valid YAML at line"),
    ("run duplicate key", lambda t: ["run", "--config", _config(
        t, GOOD_CONFIG + "run: {epochs: 3}\n")], "duplicate key 'run'"),
    ("run benchmark a string", lambda t: ["run", "--config", _config(
        t, "benchmark: somename\n")], "'benchmark' must be a mapping"),
    ("run grid a string", lambda t: ["run", "--config", _config(
        t, GOOD_CONFIG.replace("grid: {seed: [0, 1]}", 'grid: "method=naive"'))],
     "'grid' must be a mapping of axes"),
    ("run empty axis", lambda t: ["run", "--config", _config(
        t, GOOD_CONFIG.replace("[0, 1]", "[]"))], "grid axis 'seed' has no values"),
    ("run repeated axis value", lambda t: ["run", "--config", _config(
        t, GOOD_CONFIG.replace("[0, 1]", "[0, 0]"))], "grid axis 'seed' lists 0 twice"),
    ("run empty out", lambda t: ["run", "--config", _config(t, GOOD_CONFIG + 'out: ""\n')],
     "'out' must be a non-empty string"),
    ("run out is a file", lambda t: ["run", "--config", _config(t), "--out",
                                     str(_file(t, "f", b"x"))], "is a file"),
    ("run set twice", lambda t: ["run", "--config", _config(t), "--set", "epochs=1", "--set",
                                 "epochs=2"], "--set gives ['epochs'] more than once"),
    ("run set without value", lambda t: ["run", "--config", _config(t), "--set", "epochs="],
     "has no value"),
    ("run set wrong type", lambda t: ["run", "--config", _config(t), "--set", "benchmark=x"],
     "'benchmark' must be a mapping"),
    ("run repeated cell", lambda t: ["run", "--config", _config(t), "--cell", "0", "0"],
     "--cell lists 0 twice"),
]


@pytest.mark.parametrize("case, argv, phrase", CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_command_line_error_is_one_line(case, argv, phrase, tmp_path, capsys):
    from avalanche_cts.harness.cli import main

    try:
        code = main(argv(tmp_path))
    except SystemExit as e:  # argparse's own usage errors
        code = e.code
    err = capsys.readouterr().err
    assert code == 2 and phrase in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) <= 2, err


def test_yaml_numbers_and_the_config_are_read_as_written(tmp_path, capsys):
    from avalanche_cts.harness.cli import main
    from avalanche_cts.harness.grid import expand_cells, load_config

    cfg = load_config(_config(tmp_path, GOOD_CONFIG + "description: lr 1e-3\n"), ["lr=1e-3"])
    assert [c.cfg.lr for c in expand_cells(cfg)] == [1e-3, 1e-3]
    assert main(["run", "--config", _config(tmp_path), "--set", "lr=1e-3", "--list"]) == 0
    assert "2 cells" in capsys.readouterr().out


def test_report_only_leaves_out_results_of_other_settings(tmp_path, capsys):
    from avalanche_cts.harness.cli import main

    config = _config(tmp_path)
    out = tmp_path / "out"
    foreign = dict(config=dict(method="naive", selector="random", scorer="random", budget=0,
                               token_retention=None, seed=0), settings=dict(run={"epochs": 9}),
                   acc_matrix=[[0.5]], final_acc=0.5, avg_inc_acc=0.5, forgetting=0.0,
                   memory_bytes=0, wall_time_s=1.0)
    (out / "seed=0").mkdir(parents=True)
    (out / "seed=0" / "result.json").write_text(json.dumps(foreign))
    (out / "other").mkdir()
    (out / "other" / "result.json").write_text(json.dumps(foreign))  # not a cell of the config
    assert main(["run", "--config", config, "--out", str(out), "--report-only"]) == 0
    captured = capsys.readouterr()
    assert "left out of the summary" in captured.err and "seed=0" in captured.err
    assert "no finished runs" in captured.out


WARNINGS = [
    # (case id, a call with a legitimate but surprising input, a phrase of the warning)
    ("buffer budget holds no record", lambda t: _post_adapt(
        CoreTokensetBuffer(budget_bytes=1), _pixels(4), torch.zeros(4).long()),
     "the memory holds no record after experience 0"),
    ("one sample at the whole budget", lambda t: _post_adapt(
        CoreTokensetBuffer(budget_fraction=1.0), _pixels(1), torch.zeros(1).long()),
     "the memory holds no record"),
    ("buffer float pixels", lambda t: _post_adapt(
        _buffer(), torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(0)),
        torch.zeros(4).long()), "the memory stores them as torch.float32"),
    ("model predicts one class", lambda t: _one_class(),
     "predicts class 3 for every test image of experience 1, which it has just been trained on: "
     "it has collapsed; a lower learning rate helps when training diverged, a faster classifier "
     "head (RunConfig.head_lr_scale"),
    ("stream holds pretraining images", lambda t: _pretraining_images(),
     "the stream holds pretraining images"),
]


def _one_class():
    from avalanche_cts.harness.diagnostics import SingleClassWarning

    probe = SingleClassWarning()
    s = SimpleNamespace(experience=SimpleNamespace(current_experience=1),
                        clock=SimpleNamespace(train_exp_counter=2),
                        mb_output=torch.tensor([[0.0, 0, 0, 1]] * 4), mb_y=torch.tensor([2, 3] * 2))
    probe.before_eval_exp(s)
    probe.after_eval_forward(s)
    probe.after_eval_exp(s)


def _pretraining_images():
    from avalanche_cts.harness.runner import _check_pretraining_images

    bm = SimpleNamespace(info=dict(name="fmnist", heldout_per_class=0))
    _check_pretraining_images(RunConfig(model="vit_fmnist_tiny", pretrained=True), bm)


@pytest.mark.parametrize("case, call, phrase", WARNINGS, ids=[c[0] for c in WARNINGS])
def test_surprising_input_warns(case, call, phrase, tmp_path):
    with pytest.warns(UserWarning, match=None) as record:
        call(tmp_path)
    assert any(phrase in str(w.message) for w in record), [str(w.message) for w in record]


def test_legitimate_inputs_newcomers_tried_are_accepted():
    buf = CoreTokensetBuffer(budget_fraction=0.1, normalization=(0.5, 0.5))  # one channel
    assert buf.normalization == Normalization((0.5,), (0.5,))
    scores = get_scorer("gradlrp").score(_micro(), _images().double(), torch.tensor([1, 2]))
    assert scores.dtype == torch.float32 and bool(torch.isfinite(scores).all())
    assert split_fashion_mnist.__kwdefaults__["heldout_per_class"] == 5000
