"""ImageNet-R and ImageNet-100 builders on tiny generated ImageFolder trees (no downloads)."""

import hashlib
import random
from importlib import resources

import numpy as np
import pytest
import torch

from avalanche_cts.benchmarks import DatasetLayoutError, SplitImageNet100, SplitImageNetR
from avalanche_cts.benchmarks.imagenet100 import (
    imagenet1k_wnids,
    seeded_class_order,
    subset_wnids,
    ucir_subset,
)
from avalanche_cts.benchmarks.imagenet_r import coda_class_order, random_split_indices

WNIDS = ["n00000004", "n00000001", "n00000003", "n00000002"]  # unsorted on purpose
UCIR_ORDER = [
    68,
    56,
    78,
    8,
    23,
    84,
    90,
    65,
    74,
    76,
    40,
    89,
    3,
    92,
    55,
    9,
    26,
    80,
    43,
    38,
    58,
    70,
    77,
    1,
    85,
    19,
    17,
    50,
    28,
    53,
    13,
    81,
    45,
    82,
    6,
    59,
    83,
    16,
    15,
    44,
    91,
    41,
    72,
    60,
    79,
    52,
    20,
    10,
    31,
    54,
    37,
    95,
    14,
    71,
    96,
    98,
    97,
    2,
    64,
    66,
    42,
    22,
    35,
    86,
    24,
    34,
    87,
    21,
    99,
    0,
    88,
    27,
    18,
    94,
    11,
    12,
    47,
    25,
    30,
    46,
    62,
    69,
    36,
    61,
    7,
    63,
    75,
    5,
    32,
    4,
    51,
    48,
    73,
    93,
    39,
    67,
    29,
    49,
    57,
    33,
]


def _tree(root, per_class, wnids=WNIDS):
    """root/<wnid>/img_<i>.png: 6x6 RGB images; red = 40 x (sorted-WNID index), green = 20 i."""
    from PIL import Image

    for w in wnids:
        (root / w).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            arr = np.full((6, 6, 3), (40 * sorted(wnids).index(w), 20 * i, 7), dtype=np.uint8)
            Image.fromarray(arr).save(root / w / f"img_{i}.png")
    return root


@pytest.fixture(scope="module")
def imagenet_r_root(tmp_path_factory):
    return _tree(tmp_path_factory.mktemp("imagenet-r"), per_class=10)


def _paths(stream_or_ds):
    return [p for p, _ in stream_or_ds.samples]


def test_random_split_is_seeded_disjoint_stable_and_matches_random_split():
    tr, te = random_split_indices(20, 0.8, seed=3)
    assert (
        len(tr) == 16
        and len(te) == 4
        and not set(tr) & set(te)
        and sorted(tr + te) == list(range(20))
    )
    assert (tr, te) == random_split_indices(20, 0.8, seed=3)
    assert tr != random_split_indices(20, 0.8, seed=4)[0]
    ref = torch.utils.data.random_split(
        range(20), [16, 4], generator=torch.Generator().manual_seed(3)
    )
    assert (tr, te) == (list(ref[0].indices), list(ref[1].indices))


def test_imagenet_r_random_split_stream(imagenet_r_root):
    bm = SplitImageNetR(imagenet_r_root, n_experiences=2, seed=0, image_size=4, resize=6)
    info = bm.info
    assert info["classes"] == sorted(WNIDS) and (info["n_train"], info["n_test"]) == (32, 8)
    assert [e.classes_in_this_experience for e in bm.train_stream] == [[0, 1], [2, 3]]
    x, y, t = bm.test_stream[0].dataset[0]
    assert x.shape == (3, 4, 4) and 0 <= float(x.min()) and float(x.max()) <= 1
    # the class of an item is its sorted-WNID index: the red channel encodes it
    for exp in bm.test_stream:
        for x, y, _ in exp.dataset:
            assert round(float(x[0, 0, 0]) * 255 / 40) == y
    with pytest.raises(DatasetLayoutError, match=r"classes \[2\] have no test images"):
        SplitImageNetR(imagenet_r_root, n_experiences=2, seed=2)  # a split too small for 4 classes


def test_imagenet_r_folders_split(tmp_path):
    _tree(tmp_path / "train", 3)
    _tree(tmp_path / "test", 1)
    bm = SplitImageNetR(tmp_path, n_experiences=4, split="folders", image_size=4, resize=6)
    assert (bm.info["n_train"], bm.info["n_test"]) == (12, 4)
    assert [e.classes_in_this_experience for e in bm.train_stream] == [[0], [1], [2], [3]]


def _coda_files(root, split_dir):
    import yaml

    split_dir.mkdir()
    label_of = {w: i for i, w in enumerate(WNIDS)}  # CODA labels are not sorted-WNID indices
    for name, files in (
        ("imagenet-r_train.yaml", range(8)),
        ("imagenet-r_test.yaml", range(8, 10)),
    ):
        data = [f"data/imagenet-r/{w}/img_{i}.png" for w in WNIDS for i in files]
        targets = [label_of[p.split("/")[2]] for p in data]
        (split_dir / name).write_text(yaml.safe_dump({"data": data, "targets": targets}))


def test_imagenet_r_coda_split_relabels_to_sorted_wnids(imagenet_r_root, tmp_path):
    _coda_files(imagenet_r_root, tmp_path / "splits")
    with pytest.warns(UserWarning, match="differs from CODA-Prompt"):
        bm = SplitImageNetR(
            imagenet_r_root,
            n_experiences=2,
            split="coda",
            split_files=tmp_path / "splits",
            image_size=4,
            resize=6,
        )
    assert (bm.info["n_train"], bm.info["n_test"]) == (32, 8)
    assert bm.info["order"] == [0, 1, 2, 3]
    labels = sorted({y for e in bm.train_stream for y in e.dataset.targets})
    assert labels == [0, 1, 2, 3]  # a bijection onto sorted-WNID indices
    for x, y, _ in bm.train_stream[0].dataset:
        assert round(float(x[0, 0, 0]) * 255 / 40) == y
    with pytest.warns(UserWarning):
        coda = SplitImageNetR(
            imagenet_r_root,
            n_experiences=2,
            split="coda",
            class_order="coda",
            split_files=tmp_path / "splits",
            seed=1,
            image_size=4,
            resize=6,
        )
    yaml_order = list(range(4))
    random.Random(1).shuffle(yaml_order)
    expected = [sorted(WNIDS).index(WNIDS[lab]) for lab in yaml_order]
    assert coda.info["order"] == expected
    assert coda_class_order(dict(enumerate(WNIDS)), sorted(WNIDS), 0) == [3, 0, 2, 1]
    assert [sorted(e.classes_in_this_experience) for e in coda.train_stream] == [
        sorted(expected[:2]),
        sorted(expected[2:]),
    ]


def test_imagenet_r_bad_roots_show_the_layout(tmp_path, imagenet_r_root):
    with pytest.raises(DatasetLayoutError, match="Expected layout"):
        SplitImageNetR(tmp_path / "missing")
    (tmp_path / "train").mkdir()
    (tmp_path / "test").mkdir()
    with pytest.raises(DatasetLayoutError, match="split='folders'"):
        SplitImageNetR(tmp_path, n_experiences=2)
    _tree(tmp_path / "train", 1, ["n00000001"])
    with pytest.raises(DatasetLayoutError, match="missing .* n00000001"):
        SplitImageNetR(tmp_path, n_experiences=1, split="folders")  # test/ lacks the class
    with pytest.raises(ValueError, match="split_files"):
        SplitImageNetR(imagenet_r_root, split="coda")
    with pytest.raises(ValueError, match="does not divide"):
        SplitImageNetR(imagenet_r_root, n_experiences=3)


def test_ucir_rule_regenerates_the_shipped_imagenet100_list():
    wnids = imagenet1k_wnids()
    assert len(wnids) == len(set(wnids)) == 1000 and wnids == sorted(wnids)
    assert (
        hashlib.md5(("\n".join(wnids) + "\n").encode()).hexdigest()
        == "5ef135d00f8768c0f62853cd9dbc563d"
    )
    shipped = (resources.files("avalanche_cts") / "data" / "imagenet100_ucir1993.txt").read_text()
    assert hashlib.md5(shipped.encode()).hexdigest() == "4604504681ba901b09349f149ccdad8e"
    assert "\n".join(ucir_subset(wnids)) + "\n" == shipped
    assert subset_wnids("ucir1993") == shipped.split()
    podnet = subset_wnids("podnet")
    assert podnet[0] == "n01440764" and podnet[-1] == "n01855672" and len(podnet) == 100


def test_seed_1993_class_order():
    assert seeded_class_order(100, 1993) == UCIR_ORDER
    assert UCIR_ORDER[:5] == [68, 56, 78, 8, 23] and sorted(UCIR_ORDER) == list(range(100))


def test_imagenet100_stream_from_a_tiny_tree(tmp_path):
    subset = tmp_path / "subset.txt"
    subset.write_text("\n".join(WNIDS))
    _tree(tmp_path / "ilsvrc" / "train", 3)
    _tree(tmp_path / "ilsvrc" / "val", 2)
    (tmp_path / "ilsvrc" / "train" / "n09999999").mkdir()  # classes outside the subset are ignored
    bm = SplitImageNet100(
        tmp_path / "ilsvrc", n_experiences=2, subset=str(subset), seed=1993, image_size=4, resize=6
    )
    order = seeded_class_order(4, 1993)
    assert bm.info["order"] == order and (bm.info["n_train"], bm.info["n_test"]) == (12, 8)
    assert [sorted(e.classes_in_this_experience) for e in bm.train_stream] == [
        sorted(order[:2]),
        sorted(order[2:]),
    ]
    assert all(len(e.classes_in_this_experience) == 2 for e in bm.test_stream)


def test_imagenet100_bad_roots_show_the_layout(tmp_path):
    with pytest.raises(DatasetLayoutError, match="val/n01440764"):
        SplitImageNet100(tmp_path)  # no train/ folder
    (tmp_path / "train").mkdir()
    (tmp_path / "val").mkdir()
    with pytest.raises(DatasetLayoutError, match="100 of 100 class folders are missing"):
        SplitImageNet100(tmp_path)
