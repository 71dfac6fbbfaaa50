"""Planted signal: do the scorers find the one patch that carries the label?

32x32 grey images, 8x8 patches (P = 16), Gaussian background. One random patch holds one of
4 class templates (the label); a second patch holds a higher-contrast distractor template at
an independent random position. A small timm ViT (dim 64, depth 4, 8 heads) learns the task to
100% test accuracy in 4 short epochs (module fixture, trained once). The metric is how often
a scorer ranks the label patch first among the 16 patches of 400 test images.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from avalanche_cts.models import create_model
from avalanche_cts.scorers import get_scorer
from avalanche_cts.tokens.patches import unpatchify

torch.set_num_threads(1)

IMG, PATCH, CLASSES = 32, 8, 4
GRID = IMG // PATCH
P = GRID * GRID


def planted(n: int, g: torch.Generator, noise: float = 0.5, label_amp: float = 1.0, distractor_amp: float = 2.0):
    """``(images (n,1,32,32), labels, label patch index, distractor patch index)``."""
    t = torch.Generator().manual_seed(1234)  # fixed templates, shared by train and test
    d = PATCH * PATCH
    templates = torch.randint(0, 2, (CLASSES, d), generator=t).float() * 2 - 1
    distractor = torch.randint(0, 2, (d,), generator=t).float() * 2 - 1
    y = torch.randint(0, CLASSES, (n,), generator=g)
    pos = torch.rand(n, P, generator=g).argsort(1)[:, :2]
    tokens = noise * torch.randn(n, P, d, generator=g)
    rows = torch.arange(n)
    tokens[rows, pos[:, 0]] += label_amp * templates[y]
    tokens[rows, pos[:, 1]] += distractor_amp * distractor
    return unpatchify(tokens, PATCH, 1, (GRID, GRID)), y, pos[:, 0], pos[:, 1]


@pytest.fixture(scope="module")
def trained():
    g = torch.Generator().manual_seed(0)
    x, y, _, _ = planted(3000, g)
    test = planted(400, g)
    torch.manual_seed(0)
    model = create_model("vit_tiny_patch16_224", img_size=IMG, patch_size=PATCH, in_chans=1, embed_dim=64,
                         depth=4, num_heads=8, mlp_ratio=2.0, num_classes=CLASSES)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    for _ in range(4):
        for idx in torch.randperm(len(y), generator=g).split(64):
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        acc = (model(test[0]).argmax(1) == test[1]).float().mean().item()
    assert acc > 0.99, f"planted task not learned: test accuracy {acc:.3f}"
    return model, test


def hit_rates(model, test, scorer):
    """(label patch ranked first, distractor ranked first) over the test images."""
    x, y, label_pos, distractor_pos = test
    top = get_scorer(scorer)(model, x, y).argmax(1)
    return (top == label_pos).float().mean().item(), (top == distractor_pos).float().mean().item()


@pytest.fixture(scope="module")
def rates(trained):
    out = {name: hit_rates(*trained, name) for name in ("random", "rollout", "gradcam", "gradlrp", "atman")}
    print("\nscorer   label-first  distractor-first")
    for name, (label, distractor) in out.items():
        print(f"{name:8s} {label:11.3f} {distractor:17.3f}")
    return out


@pytest.mark.parametrize("scorer", ["rollout", "gradlrp", "atman"])
def test_attribution_finds_the_label_patch(scorer, rates):
    label, distractor = rates[scorer]
    assert label >= 0.9 and distractor <= 0.05


def test_random_hits_about_one_in_p(rates):
    assert abs(rates["random"][0] - 1 / P) < 0.04


def test_maps_depend_on_the_trained_weights(trained, rates):
    """Model randomisation check (Adebayo et al. 2018): a re-initialised model loses the label patch."""
    _, test = trained
    fresh = create_model("vit_tiny_patch16_224", img_size=IMG, patch_size=PATCH, in_chans=1, embed_dim=64,
                         depth=4, num_heads=8, mlp_ratio=2.0, num_classes=CLASSES).eval()
    for scorer in ("gradlrp", "atman"):
        assert hit_rates(fresh, test, scorer)[0] < 0.5 * rates[scorer][0]
