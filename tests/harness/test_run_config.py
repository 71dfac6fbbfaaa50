"""`avalanche-cts run` and the runner's GPU path, on generated images and a micro ViT (CPU)."""

import json
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import run_interrupted
import torch

from avalanche_cts.benchmarks import synthetic_benchmark
from avalanche_cts.harness import RunConfig, run
from avalanche_cts.harness.grid import expand_cells, load_config, select_cells

CONFIGS = Path(__file__).resolve().parents[2] / "experiments" / "configs"
TINY = CONFIGS / "tiny_cpu.yaml"


@pytest.fixture(scope="module")
def tiny_bm():
    return synthetic_benchmark(
        2, n_classes=4, train_per_class=32, test_per_class=8, image_size=8, channels=1
    )


def _cfg(**kw):
    base = dict(model="vit_digits_micro", epochs=2, batch_size=16, lr=0.01, seed=0)
    return RunConfig(**{**base, **kw})


def test_paper_configs_expand_to_their_grids():
    cells = expand_cells(load_config(CONFIGS / "table1_imagenet100.yaml"))
    methods = {c.cfg.method for c in cells}
    assert {"coreset", "core_tokens", "core_tokenset"} <= methods
    assert {c.cfg.budget for c in cells} >= {0.01, 0.5}
    assert all(c.benchmark["name"] == "imagenet100" and c.cfg.pretrained for c in cells)
    t2 = expand_cells(load_config(CONFIGS / "table2_imagenet_r.yaml"))
    ours = select_cells(t2, only="method=core_tokenset")
    assert {c.benchmark["n_experiences"] for c in ours} == {10, 20}
    assert {(c.cfg.selector, c.cfg.scorer, c.cfg.budget) for c in ours} == {
        ("gradmatch", "atman", 0.5)
    }
    assert len({c.key for c in t2}) == len(t2)
    picked = select_cells(t2, indices=[1], only=None)
    assert [c.index for c in picked] == [1]
    over = expand_cells(load_config(TINY, ["epochs=1", "benchmark.n_classes=6", "out=/x"]))
    assert over[0].cfg.epochs == 1 and over[0].benchmark["n_classes"] == 6


def test_run_command_writes_results_plots_and_summary(tmp_path, capsys):
    from avalanche_cts.harness.cli import main

    argv = ["run", "--config", str(TINY), "--out", str(tmp_path), "--only", "method=core_tokenset"]
    assert main(argv) == 0
    (cell,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    result = json.loads((cell / "result.json").read_text())
    for name in ("accuracy.png", "state.pt", "log.txt", "csv/eval_results.csv"):
        assert (cell / name).stat().st_size > 0
    assert len(result["acc_matrix"]) == 2 and result["acc_matrix"][0][0] == 1.0
    assert 0 < result["memory_bytes"] <= 0.25 * 128 * 64
    for key in ("final_acc", "avg_inc_acc", "forgetting", "final_acc_weighted", "wall_time_s"):
        assert key in result
    for name in ("summary.csv", "summary.md", "summary.png"):
        assert (tmp_path / name).stat().st_size > 0
    stamp = (cell / "result.json").stat().st_mtime_ns
    assert main(argv) == 0  # a finished cell with the same settings is reused
    assert "1 finished, 0 to run" in capsys.readouterr().out
    assert (cell / "result.json").stat().st_mtime_ns == stamp
    assert main(argv + ["--set", "epochs=3"]) == 2  # other settings: refused, not reused
    err = capsys.readouterr().err
    assert "epochs: 4 -> 3" in err and "--force" in err and "--out" in err
    assert main(argv + ["--set", "benchmark.train_per_class=16"]) == 2  # data settings count
    assert "train_per_class: 32 -> 16" in capsys.readouterr().err
    assert main(argv + ["--set", "epochs=3", "--force"]) == 0
    assert json.loads((cell / "result.json").read_text())["config"]["epochs"] == 3


def test_run_command_names_bad_input_in_one_line(tmp_path, capsys):
    from avalanche_cts.harness.cli import main

    base = ["run", "--config", str(TINY), "--out", str(tmp_path)]
    assert main(base + ["--only", "method=foo"]) == 2
    assert "no cell of" in capsys.readouterr().err
    assert main(base + ["--set", "epochs=0"]) == 2  # checked before any run starts
    err = capsys.readouterr().err
    assert "RunConfig.epochs must be an integer >= 1, got 0" in err and "Traceback" not in err
    assert not list(tmp_path.iterdir())
    with pytest.raises(ValueError, match="epochs"):
        main(["--debug"] + base + ["--set", "epochs=0"])


def test_resumed_run_matches_an_uninterrupted_one(tiny_bm, tmp_path):
    cfg = _cfg(
        method="core_tokenset",
        budget=0.25,
        replay_mode="sparse",
        grad_accum=2,
        lr_schedule="cosine",
    )
    full = run(replace(cfg, out_dir=str(tmp_path / "full")), tiny_bm, log=None)
    resumed, lines = run_interrupted(cfg, tiny_bm, tmp_path / "cut", "exp 1/2")
    assert "resumed" in lines[0]
    assert resumed["acc_matrix"] == full["acc_matrix"]
    assert resumed["memory_bytes"] == full["memory_bytes"]
    a = torch.load(tmp_path / "full" / "state.pt", weights_only=True)
    b = torch.load(tmp_path / "cut" / "state.pt", weights_only=True)
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k
    from avalanche_cts.memory.distributed import buffer_digest
    from avalanche_cts import CoreTokensetBuffer

    digests = []
    for s in (a, b):
        buf = CoreTokensetBuffer(budget_fraction=0.25, token_retention=cfg.retention(),
                                 scorer=cfg.scorer, token_choice=cfg.token_choice)
        buf.load_state_dict(s["plugins"]["plugin0"])
        digests.append(buffer_digest(buf))
    assert digests[0] == digests[1]


def test_gradient_accumulation_equals_the_large_batch(tiny_bm):
    models = []
    for bs, k in ((16, 1), (8, 2)):
        torch.manual_seed(0)
        from avalanche_cts.models import create_model

        model = create_model("vit_digits_micro", num_classes=4, drop_rate=0.0)
        run(
            _cfg(
                method="naive", optimizer="sgd", momentum=0.0, epochs=1, batch_size=bs, grad_accum=k
            ),
            tiny_bm,
            log=None,
            model=model,
        )
        models.append(model.state_dict())
    for k, v in models[0].items():
        assert torch.allclose(v, models[1][k], atol=1e-6), k


def test_bf16_path_keeps_fused_attention_on(tiny_bm):
    from avalanche_cts.models import create_model

    model = create_model("vit_digits_micro", num_classes=4)
    res = run(
        _cfg(method="core_tokenset", budget=0.25, scorer="rollout", precision="bf16", epochs=1),
        tiny_bm,
        log=None,
        model=model,
    )
    assert res["memory_records"] > 0
    flags = [m.fused_attn for m in model.modules() if hasattr(m, "fused_attn")]
    assert flags and all(flags)


def test_paper_scale_configs_normalise_with_the_backbone_constants():
    from avalanche_cts.benchmarks import image_transforms
    from avalanche_cts.harness.execute import cell_data

    for name in ("table1_imagenet100.yaml", "table2_imagenet_r.yaml"):
        cell = expand_cells(load_config(CONFIGS / name))[0]
        norm = cell_data(cell)["normalization"]
        assert norm == {"mean": [0.5] * 3, "std": [0.5] * 3}, name  # AugReg ViT-B/16
    _, test_t = image_transforms(32, normalization=((0.5,) * 3, (0.25,) * 3))
    from PIL import Image

    x = test_t(Image.new("RGB", (40, 40), (255, 0, 128)))
    assert torch.allclose(x[:, 0, 0], torch.tensor([2.0, -2.0, (128 / 255 - 0.5) / 0.25]),
                          atol=1e-5)


def test_matched_dropout_through_the_run_config_resumes_and_changes_training(tiny_bm, tmp_path):
    with pytest.raises(ValueError, match="RunConfig.dropout_tokens must be one of"):
        _cfg(dropout_tokens="scored")
    with pytest.raises(ValueError, match="RunConfig.dropout_refresh must be one of"):
        _cfg(dropout_refresh="batch")
    cfg = _cfg(method="core_tokenset", budget=0.25, scorer="rollout", token_choice="gumbel",
               dropout_tokens="matched", dropout_refresh="epoch")
    full = run(replace(cfg, out_dir=str(tmp_path / "full")), tiny_bm, log=None)
    resumed, _ = run_interrupted(cfg, tiny_bm, tmp_path / "cut", "exp 1/2")
    assert resumed["acc_matrix"] == full["acc_matrix"]
    plain = run(replace(cfg, dropout_tokens="random", out_dir=str(tmp_path / "plain")), tiny_bm,
                log=None)
    assert plain["settings"]["run"]["dropout_tokens"] == "random"
    assert plain["fingerprint"] != full["fingerprint"]
    a, b = (torch.load(tmp_path / d / "state.pt", weights_only=True)["model"]
            for d in ("full", "plain"))
    assert any(not torch.equal(a[k], b[k]) for k in a)  # other tokens kept, other training


def test_buffer_options_and_run_fields_share_out_the_memory_settings():
    """Every MemorySettings field is either an ``options["buffer"]`` key that reaches
    ``RunConfig.memory()`` or one RunConfig sets itself, which options refuse."""
    from dataclasses import fields

    from avalanche_cts.harness.options import _SET_BY_RUN, buffer_keys
    from avalanche_cts.memory.settings import MemorySettings

    given = {"temperature": 0.5, "pixel_dtype": "float16", "weighted": True,
             "keep_sources": True, "batch_size": 7, "num_workers": 1}
    assert set(buffer_keys()) == set(given) | {"normalization"}
    for key, value in given.items():
        memory = RunConfig(method="coreset", options={"buffer": {key: value}}).memory()
        assert getattr(memory, key) == value != getattr(MemorySettings(budget_bytes=1), key)
    by_run = {f.name for f in fields(MemorySettings)} - set(given)
    assert by_run <= _SET_BY_RUN["buffer"]
    for key in sorted(by_run):
        with pytest.raises(ValueError, match=f"{key} is set from the RunConfig fields"):
            RunConfig(method="coreset", options={"buffer": {key: None}})
