"""Bad inputs of the memory, its scorers and selectors, and the data and cache files, named:
one table, one row per case (issue 24, cases 6-10 and their classes).

Each row of ``CASES``: (case id, a call with one bad input, the exception type, a phrase of
the message). ``WARNINGS``: legitimate inputs with a surprising outcome, which run and warn
naming the cause. The tests after the tables check that legitimate variants still work.
"""
import os
import warnings
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from avalanche_cts import CoreTokensetBuffer, CoreTokensetReplayPlugin, create_model
from avalanche_cts.benchmarks.fmnist import load_fashion_mnist
from avalanche_cts.memory.dropout import NewDataDropout
from avalanche_cts.memory.records import GROUP_HEADER_BYTES
from avalanche_cts.memory.sample_buffers import ByteBudgetResize
from avalanche_cts.scorers import TokenScorer, get_scorer
from avalanche_cts.selectors import SampleSelector, Selection

torch.set_num_threads(1)

T = 16
"""Patch tokens of ``vit_digits_micro`` (8 x 8 images, 2 x 2 patches)."""


def _micro():
    torch.manual_seed(0)
    return create_model("vit_digits_micro")


def _pixels(n, seed=0):
    """``n`` exact 8-bit grey 8 x 8 images in [0, 1]."""
    return (torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed)) * 255).round() / 255


def _exp(n=12, classes=(0, 1), experience=0, images=None, seed=0):
    from avalanche.benchmarks.utils import _make_taskaware_tensor_classification_dataset

    x = _pixels(n, seed) if images is None else images
    y = torch.tensor(list(classes) * (n // len(classes)))
    return SimpleNamespace(dataset=_make_taskaware_tensor_classification_dataset(x, y),
                           current_experience=experience)


def _agent(model=None):
    return SimpleNamespace(model=model or _micro(), device="cpu")


def _adapt(buffer, *exps, model=None):
    agent = _agent(model)
    for e in exps:
        buffer.post_adapt(agent, e)
    return buffer


def _buffer(**kw):
    return CoreTokensetBuffer(**{"budget_fraction": 0.5, "token_retention": 0.5, **kw})


class _Scores(TokenScorer):
    """A user scorer returning ``make(B)``."""
    name = "user"

    def __init__(self, make):
        self.make = make

    def score(self, model, images, targets=None):
        return self.make(len(images))


def _nan_scores(b):
    s = torch.rand(b, T)
    s[1, 3] = float("nan")
    return s


class _Picks(SampleSelector):
    """A user selector returning ``Selection(indices, weights)``."""
    name = "user"

    def __init__(self, indices, weights=None):
        self.indices, self.weights = indices, weights

    def _select(self, k, n, features):
        w = torch.ones(len(self.indices)) if self.weights is None else self.weights
        return Selection(self.indices, w)


def _naive(model, plugins):
    from avalanche.training import Naive

    return Naive(model=model, optimizer=torch.optim.SGD(model.parameters(), 1e-3),
                 train_mb_size=32, train_epochs=1, eval_mb_size=64, plugins=plugins,
                 evaluator=None)


def _digits():
    from conftest import make_digits_benchmark

    return make_digits_benchmark()


def _train_twice():
    bm, model = _digits(), _micro()
    strategy = _naive(model, [CoreTokensetReplayPlugin(_buffer(budget_fraction=0.05))])
    strategy.train(bm.train_stream[0])
    strategy.train(bm.train_stream[0])


def _two_strategies():
    bm, buffer = _digits(), _buffer(budget_fraction=0.05)
    _naive(_micro(), [CoreTokensetReplayPlugin(buffer)]).train(bm.train_stream[0])
    _naive(_micro(), [CoreTokensetReplayPlugin(buffer)]).train(bm.train_stream[1])


def _matched_dropout(scorer):
    d = NewDataDropout(0.5, tokens="matched", scorer=scorer)
    d.keep_mask(_micro(), (_pixels(4), torch.zeros(4).long()), T)


def _fmnist(tmp, corrupt):
    """Fake Fashion-MNIST IDX files (train images gzipped) with one file spoiled."""
    from conftest import write_fake_fmnist

    def square(img, c):
        img[c:c + 3, 3:6] = 255

    (tmp / "fmnist").mkdir()
    root = write_fake_fmnist(tmp / "fmnist", square, seed=0, gz_train=True)
    corrupt(root)
    return load_fashion_mnist(root, download=False)


def _cut(name, keep):
    def corrupt(root):
        path = root / name
        data = path.read_bytes()
        path.write_bytes(data[:keep(len(data))])
    return corrupt


def _replace(name, data: bytes):
    return lambda root: (root / name).write_bytes(data)


def _fewer_labels(root):
    from conftest import write_idx

    (root / "t10k-labels-idx1-ubyte").unlink()
    write_idx(root / "t10k-labels-idx1-ubyte", np.zeros(150, dtype=np.uint8), gz=False)


def _with_cache(value, call):
    """``call()`` with ``AVALANCHE_CTS_CACHE=value``, restored afterwards."""
    old = os.environ.get("AVALANCHE_CTS_CACHE")
    os.environ["AVALANCHE_CTS_CACHE"] = str(value)
    try:
        return call()
    finally:
        if old is None:
            del os.environ["AVALANCHE_CTS_CACHE"]
        else:
            os.environ["AVALANCHE_CTS_CACHE"] = old


def _split(**kw):
    from avalanche_cts.benchmarks import split_fashion_mnist

    return split_fashion_mnist(**kw)


def _synthetic(**kw):
    from avalanche_cts.benchmarks import synthetic_benchmark

    return synthetic_benchmark(**{"n_experiences": 2, "n_classes": 4, "train_per_class": 3,
                                  "test_per_class": 2, "image_size": 8, "channels": 1, **kw})


def _a_file(tmp):
    path = tmp / "a_file"
    path.write_text("x")
    return path


def _fmnist_through_cache(tmp, value):
    return _with_cache(value, lambda: _fmnist(tmp, lambda root: None))


def _pretrain_into(cache_dir):
    from avalanche_cts.harness.pretrain import PretrainSpec, pretrain_backbone

    spec = PretrainSpec(benchmark="fmnist", model="vit_fmnist_tiny", epochs=1)  # none shipped
    pretrain_backbone(spec, cache_dir=cache_dir, log=None)


CASES = [
    # 6. duplicate experiences, buffers shared between strategies
    ("buffer experience twice", lambda t: _adapt(_buffer(), _exp(), _exp()), ValueError,
     "experience 0 is already in the memory"),
    ("buffer experience id again", lambda t: _adapt(_buffer(), _exp(experience=3), _exp(
        classes=(4, 5), experience=3, seed=1)), ValueError, "experience 3 is already in the memory"),
    ("strategy trains an experience twice", lambda t: _train_twice(), ValueError,
     "experience 0 is already in the memory"),
    ("buffer in two strategies", lambda t: _two_strategies(), ValueError,
     "already serves another strategy"),
    # 7. outputs of user scorers and selectors
    ("scorer wrong width", lambda t: _adapt(_buffer(scorer=_Scores(lambda b: torch.rand(b, 7))),
                                            _exp()), ValueError,
     "_Scores.score returned shape (7, 7) for 7 images of 16 patch tokens"),
    ("scorer nan scores", lambda t: _adapt(_buffer(scorer=_Scores(_nan_scores)), _exp()),
     ValueError, "_Scores.score returned NaN or infinite scores for image 1"),
    ("scorer returns a list", lambda t: _adapt(_buffer(scorer=_Scores(lambda b: [0.0] * b)),
                                               _exp()), TypeError,
     "_Scores.score returned list"),
    ("scorer bool scores", lambda t: _adapt(_buffer(scorer=_Scores(
        lambda b: torch.ones(b, T, dtype=torch.bool))), _exp()), TypeError,
     "expected a real tensor"),
    ("scorer prefix token kept", lambda t: _adapt(_buffer(scorer=_Scores(
        lambda b: torch.rand(b, T + 1))), _exp()), ValueError, "prefix (CLS) tokens excluded"),
    ("matched dropout scorer width", lambda t: _matched_dropout(_Scores(
        lambda b: torch.rand(b, 7))), ValueError, "_Scores.score returned shape (4, 7)"),
    ("matched dropout refresh nan", lambda t: NewDataDropout(
        0.5, tokens="matched", refresh="epoch", scorer=_Scores(_nan_scores)).refresh_scores(
        _micro(), _exp().dataset), ValueError, "_Scores.score returned NaN or infinite scores"),
    ("selector duplicate index", lambda t: _adapt(_buffer(selector=_Picks(torch.tensor([0, 0]))),
                                                  _exp()), ValueError,
     "_Picks.select returned an index twice"),
    ("selector index out of range", lambda t: _adapt(_buffer(selector=_Picks(
        torch.tensor([0, 6]))), _exp()), ValueError, "outside [0, 6)"),
    ("selector too many", lambda t: _adapt(_buffer(budget_bytes=200, budget_fraction=None,
                                                   selector=_Picks(torch.arange(5))), _exp()),
     ValueError, "returned 5 indices for k=2 of n=6 samples, expected at most 2"),
    ("selector float indices", lambda t: _adapt(_buffer(selector=_Picks(
        torch.tensor([0.0, 1.0]))), _exp()), TypeError, "expected a Selection of (k,) integer"),
    ("selector nan weights", lambda t: _adapt(_buffer(selector=_Picks(
        torch.tensor([0, 1]), torch.tensor([1.0, float("nan")]))), _exp()), ValueError,
     "expected 2 finite numbers"),
    # other dtypes
    ("buffer uint8 images", lambda t: _adapt(_buffer(), _exp(
        images=(_pixels(12) * 255).to(torch.uint8))), TypeError,
     "float image tensor (normalised model inputs), got Tensor (1, 8, 8) torch.uint8"),
    ("scorer uint8 images", lambda t: get_scorer("rollout").score(
        _micro(), torch.zeros(2, 1, 8, 8, dtype=torch.uint8)), TypeError, "torch.uint8"),
    ("fmnist seed 2**64", lambda t: _split(seed=2 ** 64), ValueError,
     "seed must be an integer >= 0 and below 2**32, got 18446744073709551616"),
    ("synthetic numpy float seed", lambda t: _synthetic(seed=np.float64(1.0)), ValueError,
     "seed must be an integer >= 0"),
    ("buffer numpy bool budget", lambda t: CoreTokensetBuffer(budget_bytes=np.bool_(True)),
     ValueError, "budget_bytes must be a positive integer"),
    # 10. data and cache files
    ("fmnist truncated gzip", lambda t: _fmnist(t, _cut("train-images-idx3-ubyte.gz",
                                                        lambda n: n // 2)), ValueError,
     "train-images-idx3-ubyte.gz cannot be read (EOFError"),
    ("fmnist not gzip", lambda t: _fmnist(t, _replace("train-images-idx3-ubyte.gz",
                                                      b"not gzip" * 20)), ValueError,
     "train-images-idx3-ubyte.gz cannot be read (BadGzipFile"),
    ("fmnist labels shorter than header", lambda t: _fmnist(t, _cut(
        "t10k-labels-idx1-ubyte", lambda n: n - 50)), ValueError,
     "t10k-labels-idx1-ubyte cannot be read"),
    ("fmnist bad magic", lambda t: _fmnist(t, _replace("t10k-labels-idx1-ubyte", b"\x01" * 20)),
     ValueError, "it is truncated or corrupt; delete it"),
    ("fmnist label count", lambda t: _fmnist(t, _fewer_labels), ValueError,
     "t10k-labels-idx1-ubyte (150,)"),
    ("cache under a file", lambda t: _fmnist_through_cache(t, _a_file(t) / "sub"), ValueError,
     "set AVALANCHE_CTS_CACHE to a writable folder"),
    ("cache is a file", lambda t: _fmnist_through_cache(t, _a_file(t)), ValueError,
     "AVALANCHE_CTS_CACHE="),
    ("cache empty", lambda t: _fmnist_through_cache(t, ""), ValueError, "is empty"),
    ("pretrain cache_dir a file", lambda t: _pretrain_into(_a_file(t)), ValueError,
     "pass cache_dir= a writable folder"),
]


@pytest.mark.parametrize("case, call, exc, phrase", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_named(case, call, exc, phrase, tmp_path):
    from conftest import assert_named

    assert_named(call, exc, phrase, tmp_path)


RECORD = T // 2 * (4 + 2) + 2
"""Bytes of a record of the micro ViT at t = 0.5: 8 tokens of 4 uint8 values and an int16
position, and an int16 length."""


def _replay_after(budget, classes):
    from avalanche.training.storage_policy import ClassBalancedBuffer

    policy = ClassBalancedBuffer(max_size=1, adaptive_size=True)
    exp = _exp(n=12, classes=classes)
    exp.classes_in_this_experience = list(classes)
    resize = ByteBudgetResize(policy, budget)
    resize.after_training_exp(SimpleNamespace(experience=exp))
    return policy


WARNINGS = [
    # (case id, a call with a legitimate but surprising input, a phrase of the warning)
    ("budget split over two classes", lambda: _adapt(_buffer(
        budget_bytes=RECORD + GROUP_HEADER_BYTES, budget_fraction=None), _exp()),
     f"split over 2 (class, task) groups, {(RECORD + GROUP_HEADER_BYTES) // 2} B each, below "
     f"one record ({RECORD} B plus a {GROUP_HEADER_BYTES} B group header); a budget of "
     f"{2 * (RECORD + GROUP_HEADER_BYTES)} B holds one record per group"),
    ("one of two classes empty", lambda: _adapt(_buffer(
        budget_bytes=RECORD + 2 * GROUP_HEADER_BYTES, budget_fraction=None), _exp()),
     "1 of 2 (class, task) groups hold no record after experience 0"),
    ("replay below one sample", lambda: _replay_after(0.005, (0,)),
     "the memory holds no sample after experience 0: its budget of 3 B is below one sample "
     "(64 B)"),
    ("replay split over classes", lambda: _replay_after(0.2, (0, 1, 2, 3)),
     "2 of 4 (class, task) groups hold no sample after experience 0"),
]


@pytest.mark.parametrize("case, call, phrase", WARNINGS, ids=[c[0] for c in WARNINGS])
def test_surprising_input_warns(case, call, phrase):
    with pytest.warns(UserWarning) as record:
        call()
    assert any(phrase in str(w.message) for w in record), [str(w.message) for w in record]


def test_named_budget_holds_one_record_per_class_and_one_byte_less_does_not():
    exact = 2 * (RECORD + GROUP_HEADER_BYTES)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        buf = _adapt(_buffer(budget_bytes=exact, budget_fraction=None), _exp())
    assert buf.record_bytes() == RECORD
    assert sorted(buf.groups) == [(0, 0), (1, 0)] and buf.num_records == 2
    with pytest.warns(UserWarning, match="1 of 2"):
        assert _adapt(_buffer(budget_bytes=exact - 1, budget_fraction=None),
                      _exp()).num_records == 1


def test_replay_budget_warning_matches_the_samples_held():
    with pytest.warns(UserWarning, match="2 of 4"):  # 153 B of 768: two 64 B samples
        assert _replay_after(0.2, (0, 1, 2, 3)).max_size == 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _replay_after(0.34, (0, 1, 2, 3)).max_size == 4  # 261 B: one per class


def test_two_different_experiences_fill_the_budget_as_before():
    budget = 4 * GROUP_HEADER_BYTES + 10 * RECORD
    buf = _adapt(_buffer(budget_bytes=budget, budget_fraction=None),
                 _exp(experience=0), _exp(classes=(2, 3), experience=1, seed=1))
    assert buf.experience_ids == [0, 1]
    assert buf.num_records == 10 and buf.nbytes == budget
    assert [len(buf.groups[k]) for k in sorted(buf.groups)] == [3, 3, 2, 2]


def test_stored_experiences_travel_with_the_state():
    buf = _adapt(_buffer(), _exp())
    fresh = _buffer()
    fresh.load_state_dict(buf.state_dict())
    assert fresh.experience_ids == [0]
    with pytest.raises(ValueError, match="experience 0 is already in the memory"):
        _adapt(fresh, _exp())
    assert _adapt(fresh, _exp(classes=(2, 3), experience=1)).experience_ids == [0, 1]


def test_one_strategy_trains_its_stream_and_a_copied_memory_serves_another():
    bm, buffer = _digits(), _buffer(budget_fraction=0.05)
    first = _naive(_micro(), [CoreTokensetReplayPlugin(buffer)])
    for exp in bm.train_stream[:2]:
        first.train(exp)
    assert buffer.experience_ids == [0, 1] and buffer.num_records > 0
    copy = _buffer(budget_fraction=0.05)
    copy.load_state_dict(buffer.state_dict())
    _naive(_micro(), [CoreTokensetReplayPlugin(copy)]).train(bm.train_stream[2])
    assert copy.experience_ids == [0, 1, 2]


def _records(buf):
    return {k: (g.values, g.positions) for k, g in buf.groups.items()}


def _same_memory(a, b):
    ra, rb = _records(a), _records(b)
    return ra.keys() == rb.keys() and all(
        torch.equal(ra[k][0], rb[k][0]) and torch.equal(ra[k][1], rb[k][1]) for k in ra)


def test_numpy_scalars_give_the_memory_of_python_numbers():
    plain = _adapt(CoreTokensetBuffer(budget_bytes=400, token_retention=0.5, seed=3), _exp())
    numpy = _adapt(CoreTokensetBuffer(budget_bytes=np.int64(400),
                                      token_retention=np.float32(0.5), seed=np.int64(3)), _exp())
    assert type(numpy.budget_bytes) is int and numpy.state_dict()["config"] == \
        plain.state_dict()["config"]
    assert plain.num_records > 0 and _same_memory(plain, numpy)
    frac = CoreTokensetBuffer(budget_fraction=np.float32(0.5))
    assert type(frac.budget_fraction) is float
    plugin = CoreTokensetReplayPlugin(plain, seed=np.int64(2), batch_size_mem=np.int64(4),
                                      mem_weight=np.float32(0.5))
    assert (plugin.seed, plugin.batch_size_mem) == (2, 4) and type(plugin.seed) is int
    from avalanche_cts.selectors import get_selector

    assert torch.equal(get_selector("random", seed=1).select(np.int64(3), np.int64(6)).indices,
                       get_selector("random", seed=1).select(3, 6).indices)


def test_float64_images_give_the_memory_of_float32_images():
    x = _pixels(12)
    a = _adapt(_buffer(budget_bytes=400, budget_fraction=None), _exp(images=x))
    b = _adapt(_buffer(budget_bytes=400, budget_fraction=None), _exp(images=x.double()))
    assert a.num_records > 0 and a.codec.dtype == torch.uint8 and _same_memory(a, b)


def _shipped_state(name):
    from avalanche_cts.harness.pretrain import SHIPPED, backbone_spec

    path = SHIPPED / backbone_spec(name).file_name()
    return torch.load(path, weights_only=True)["state_dict"]


@pytest.mark.parametrize("cache", ["missing", "empty", "cache variable empty"])
def test_shipped_backbone_loads_whatever_the_cache(tmp_path, cache):
    from avalanche_cts.harness.pretrain import load_pretrained

    def no_pretraining(msg):
        raise AssertionError(f"pretraining started: {msg}")

    kw = dict(log=no_pretraining)
    if cache != "cache variable empty":
        kw["cache_dir"] = tmp_path / "missing" if cache == "missing" else tmp_path
        model = load_pretrained("fmnist", **kw)
    else:
        model = _with_cache("", lambda: load_pretrained("fmnist", **kw))
    state = _shipped_state("fmnist")
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
    assert not (tmp_path / "missing").exists()  # nothing written: the shipped file is read


def test_fmnist_files_still_read_through_a_fresh_cache(tmp_path):
    xtr, ytr, xte, yte = _fmnist_through_cache(tmp_path, tmp_path / "new" / "cache")
    assert (xtr.shape, ytr.shape, xte.shape, yte.shape) == ((400, 28, 28), (400,),
                                                            (200, 28, 28), (200,))
    assert list((tmp_path / "new" / "cache" / "fashion-mnist").rglob("train-images-idx3-ubyte"))


def test_table_covers_the_classes():
    kinds = {c[0].split()[0] for c in CASES}
    assert {"buffer", "strategy", "scorer", "selector", "matched", "fmnist", "cache",
            "pretrain"} <= kinds


def test_numpy_benchmark_settings_give_the_stream_of_python_numbers():
    import json

    plain = _synthetic(seed=2)
    numpy = _synthetic(seed=np.int64(2), n_experiences=np.int64(2), n_classes=np.int64(4),
                       train_per_class=np.int64(3))
    assert json.dumps(numpy.info) == json.dumps(plain.info)  # Python ints, as written
    for a, b in zip(plain.train_stream, numpy.train_stream):
        assert torch.equal(torch.stack([x for x, *_ in a.dataset]),
                           torch.stack([x for x, *_ in b.dataset]))
