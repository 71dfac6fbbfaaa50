"""Pretrained-backbone protocol: held-out split, disjoint stream files, resumable cache."""
import pytest
import torch

from avalanche_cts.benchmarks.fmnist import load_fashion_mnist
from avalanche_cts.pretrain import (
    heldout_indices, load_pretrained, pretrain_backbone, stream_data_root, write_idx,
)

torch.set_num_threads(1)


@pytest.fixture()
def fake_fmnist(tmp_path):
    """Synthetic IDX files: 12 training and 3 test images per class; pixel (0, 0) = index."""
    g = torch.Generator().manual_seed(0)
    root = tmp_path / "fmnist"
    root.mkdir()
    for split, n in (("train", 120), ("t10k", 30)):
        labels = torch.arange(n) % 10
        images = torch.randint(0, 256, (n, 28, 28), generator=g, dtype=torch.uint8)
        images[:, 0, 0] = torch.arange(n, dtype=torch.uint8)
        write_idx(root / f"{split}-images-idx3-ubyte", images)
        write_idx(root / f"{split}-labels-idx1-ubyte", labels.to(torch.uint8))
    return root


def test_heldout_indices_are_the_last_per_class():
    labels = torch.tensor([0, 1, 0, 1, 0, 1, 2, 2])
    assert heldout_indices(labels, 2).tolist() == [2, 3, 4, 5, 6, 7]


def test_stream_files_exclude_the_heldout_images(fake_fmnist, tmp_path):
    xtr, ytr, xte, yte = load_fashion_mnist(fake_fmnist, download=False)
    root = stream_data_root(4, data_root=fake_fmnist, cache_dir=tmp_path / "stream")
    sxtr, sytr, sxte, syte = load_fashion_mnist(root, download=False)
    held = set(heldout_indices(ytr, 4).tolist())
    kept = sorted(set(range(120)) - held)
    assert sxtr[:, 0, 0].tolist() == kept and len(held) == 40
    assert torch.equal(sytr, ytr[kept]) and torch.bincount(sytr).tolist() == [8] * 10
    assert torch.equal(sxte, xte) and torch.equal(syte, yte)


def test_interrupted_pretraining_resumes_to_the_same_checkpoint(fake_fmnist, tmp_path):
    kw = dict(per_class=3, epochs=2, batch_size=8, data_root=fake_fmnist)
    straight = torch.load(pretrain_backbone("vit_fmnist_tiny", cache_dir=tmp_path / "a", **kw),
                          weights_only=False)

    def stop_after_first_epoch(msg):
        if "epoch 1/2" in msg:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        pretrain_backbone("vit_fmnist_tiny", cache_dir=tmp_path / "b", log=stop_after_first_epoch,
                          **kw)
    assert len(list((tmp_path / "b").glob("*.partial.pt"))) == 1
    path = pretrain_backbone("vit_fmnist_tiny", cache_dir=tmp_path / "b", log=None, **kw)
    resumed = torch.load(path, weights_only=False)
    assert not list((tmp_path / "b").glob("*.partial.pt"))
    assert resumed["meta"]["n_images"] == 30
    for k, v in straight["state_dict"].items():
        assert torch.equal(v, resumed["state_dict"][k]), k

    assert not any(k.startswith("head.") for k in resumed["state_dict"])  # knows all classes
    model = load_pretrained("vit_fmnist_tiny", num_classes=4, cache_dir=tmp_path / "b", log=None,
                            **kw)
    state = model.state_dict()
    assert torch.equal(state["blocks.0.attn.qkv.weight"],
                       resumed["state_dict"]["blocks.0.attn.qkv.weight"])
    assert state["head.weight"].shape == (4, 64)
