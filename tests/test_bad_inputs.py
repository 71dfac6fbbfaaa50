"""Every public entry point names bad input and its fix: one table, one row per case.

Each row: (case id, a call with one bad input, the exception type, a phrase of the message).
"""
from types import SimpleNamespace

import pytest
import torch

from avalanche_cts import CoreTokensetBuffer, CoreTokensetReplayPlugin, create_model
from avalanche_cts.benchmarks import cluttered_fashion_mnist, make_benchmark, split_fashion_mnist
from avalanche_cts.benchmarks import synthetic_benchmark
from avalanche_cts.harness.checkpoint import load_backbone, load_run_state, load_weights
from avalanche_cts.harness.config import RunConfig
from avalanche_cts.tokens.normalization import Normalization
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
]


@pytest.mark.parametrize("case, call, exc, phrase", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_named(case, call, exc, phrase, tmp_path):
    with pytest.raises(exc) as info:
        call(tmp_path)
    assert phrase in str(info.value), str(info.value)


def test_table_covers_the_entry_points():
    assert len(CASES) >= 40
    kinds = {c[0].split()[0] for c in CASES}
    assert {"buffer", "state", "plugin", "config", "scorer", "selector", "model",
            "checkpoint", "fmnist"} <= kinds
