"""Shared test set-up: a private HOME (Avalanche writes ~/.avalanche on import) and a private
``AVALANCHE_CTS_CACHE`` (a value set outside is replaced, so no cached backbone, vocab or
unpacked file of the user's can decide a test), both removed at exit; one torch thread per
process, and tiny class-incremental data (scikit-learn digits)."""
import atexit
import gzip
import os
import shutil
import tempfile

for _var, _prefix in (("HOME", "cts-home-"), ("AVALANCHE_CTS_CACHE", "cts-cache-")):
    os.environ[_var] = tempfile.mkdtemp(prefix=_prefix)
    atexit.register(shutil.rmtree, os.environ[_var], ignore_errors=True)

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


class _Tensors(torch.utils.data.TensorDataset):
    """``(x, y)`` tensors with the ``.targets`` list that ``nc_benchmark`` needs."""

    @property
    def targets(self):
        return self.tensors[1].tolist()


def digits_8bit():
    """1,797 digits as (N, 1, 8, 8) float images holding exact 8-bit values, and labels."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (torch.tensor(d.images, dtype=torch.float32) / 16 * 255).round() / 255
    return x[:, None], torch.tensor(d.target)


def make_digits_benchmark(n_experiences=5, seed=0):
    """Class-incremental digits: 5 experiences x 2 classes, 1,400 train / 397 test images."""
    from avalanche.benchmarks import nc_benchmark

    x, y = digits_8bit()
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    x, y = x[perm], y[perm]
    return nc_benchmark(_Tensors(x[:1400], y[:1400]), _Tensors(x[1400:], y[1400:]),
                        n_experiences=n_experiences, task_labels=False, seed=seed)


@pytest.fixture(scope="session")
def digits_benchmark():
    return make_digits_benchmark()


@pytest.fixture
def micro_vit():
    from avalanche_cts import create_model

    torch.manual_seed(0)
    return create_model("vit_digits_micro")


def write_idx(path, array, gz):
    """IDX (ubyte) file: magic 0x08 0x0{ndim}, big-endian dims, data."""
    header = bytes([0, 0, 8, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    (gzip.open if gz else open)(str(path) + (".gz" if gz else ""), "wb").write(data)


@pytest.fixture(scope="session")
def fake_fmnist(tmp_path_factory):
    """Synthetic Fashion-MNIST IDX files: class c has a bright square at a class-specific place."""
    def square(img, c):
        r, col = divmod(c, 5)
        img[4 + 12 * r:12 + 12 * r, 2 + 5 * col:6 + 5 * col] = 255

    return write_fake_fmnist(tmp_path_factory.mktemp("fmnist"), square, seed=0, gz_train=True)


def write_fake_fmnist(root, paint, seed: int, gz_train: bool = False):
    """Write Fashion-MNIST IDX files into ``root`` (400 train, 200 test images, 10 classes,
    dim noise); ``paint(image, c)`` plants the signal of class ``c`` in a (28, 28) image."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", 400), ("t10k", 200)):
        y = np.repeat(np.arange(10), n // 10)
        x = rng.integers(0, 40, (n, 28, 28))
        for i, c in enumerate(y):
            paint(x[i], int(c))
        write_idx(root / f"{split}-images-idx3-ubyte", x, gz=gz_train and split == "train")
        write_idx(root / f"{split}-labels-idx1-ubyte", y, gz=False)
    return root


def run_interrupted(cfg, bm, out, stop_at: str):
    """Run ``cfg`` into ``out``, stopped (KeyboardInterrupt) at the log line containing
    ``stop_at``, then resumed; returns the resumed result and the resumed run's log lines."""
    from dataclasses import replace

    from avalanche_cts.harness.runner import run

    def crash(line):
        if stop_at in line:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(replace(cfg, out_dir=str(out)), bm, log=crash)
    assert not (out / "result.json").exists()  # an interrupted run leaves no result
    lines = []
    return run(replace(cfg, out_dir=str(out)), bm, log=lines.append), lines


def assert_named(call, exc, phrase: str, tmp_path) -> None:
    """``call(tmp_path)`` raises ``exc`` whose message contains ``phrase`` (the bad-input
    tables' one check)."""
    with pytest.raises(exc) as info:
        call(tmp_path)
    assert phrase in str(info.value), str(info.value)
