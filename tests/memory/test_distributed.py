"""Two CPU processes (gloo): every rank holds the same replay memory, equal to one process's."""

import json
from datetime import timedelta
from types import SimpleNamespace

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from avalanche_cts import CoreTokensetBuffer
from avalanche_cts.benchmarks import synthetic_benchmark
from avalanche_cts.memory.distributed import DistributedCoreTokensetBuffer, buffer_digest
from avalanche_cts.harness import RunConfig, run
from avalanche_cts.models import create_model

PAIRS = (("herding", "atman"), ("random", "random"))


def _bm():
    return synthetic_benchmark(
        2, n_classes=4, train_per_class=24, test_per_class=4, image_size=8, channels=1
    )


def _selection_digests(buffer_cls):
    """Memories filled from a fixed model (features, selection and scoring, 2 experiences)."""
    bm = _bm()
    torch.manual_seed(0)
    agent = SimpleNamespace(model=create_model("vit_digits_micro", num_classes=4), device="cpu")
    out = {}
    for sel, sc in PAIRS:
        # top-k tokens: a deterministic choice (Gumbel noise is drawn per shard under DDP, so
        # a sampled memory is the same on every rank but not the single-process one)
        buf = buffer_cls(budget_fraction=0.3, token_retention=0.5, selector=sel, scorer=sc, seed=0,
                         batch_size=16, token_choice="topk")
        for exp in bm.train_stream:
            buf.post_adapt(agent, exp)
        out[f"{sel}+{sc}"] = (buffer_digest(buf), buf.num_records)
    return out


def _run_cfg(out_dir):
    return RunConfig(
        method="core_tokenset",
        model="vit_digits_micro",
        budget=0.3,
        epochs=1,
        batch_size=8,
        lr=0.01,
        replay_mode="sparse",
        scorer="random",
        token_choice="topk",
        retention_exponent=0.5,
        seed=0,
        out_dir=out_dir,
        grad_accum=2,
        lr_schedule="cosine",
    )


def _memory_digest(state_file):
    state = torch.load(state_file, weights_only=True)
    buf = CoreTokensetBuffer(budget_fraction=0.3, token_retention=0.3**0.5, token_choice="topk")
    buf.load_state_dict(state["plugins"]["plugin0"])
    return buffer_digest(buf)


def _worker(rank, world, init_file, out_dir):
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        init_method=f"file://{init_file}",
        rank=rank,
        world_size=world,
        timeout=timedelta(seconds=120),
    )
    try:
        found = {"selection": _selection_digests(DistributedCoreTokensetBuffer)}
        torch.manual_seed(rank)  # DDP starts every rank from rank 0's weights
        model = create_model("vit_digits_micro", num_classes=4)
        result = run(_run_cfg(f"{out_dir}/ddp"), _bm(), log=None, model=model)
        found["weights"] = [float(p.double().sum()) for p in model.parameters()]
        found["acc_matrix"] = result["acc_matrix"]
        found["memory_bytes"] = result["memory_bytes"]
        with open(f"{out_dir}/rank{rank}.json", "w") as f:
            json.dump(found, f)
    finally:
        dist.destroy_process_group()


def test_two_processes_build_the_memory_of_one(tmp_path):
    procs = mp.spawn(_worker, args=(2, str(tmp_path / "pg"), str(tmp_path)), nprocs=2, join=False)
    # the one-process references, computed while the ranks start
    single = {k: list(v) for k, v in _selection_digests(CoreTokensetBuffer).items()}
    alone = run(_run_cfg(str(tmp_path / "alone")), _bm(), log=None)
    while not procs.join():
        pass
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    # same model -> same memory as one process, for sharded features and scoring (herding +
    # AtMan) and for stream-based random choices
    assert ranks[0]["selection"] == ranks[1]["selection"] == single
    assert all(n > 0 for _, n in single.values())
    # a whole DDP run: ranks agree on metrics (each evaluates everything) and memory; with
    # model-independent choices (random selector and scorer) the memory equals a 1-process run's
    assert ranks[0]["weights"] == ranks[1]["weights"]  # gradients were all-reduced
    assert ranks[0]["acc_matrix"] == ranks[1]["acc_matrix"]
    assert ranks[0]["memory_bytes"] == ranks[1]["memory_bytes"] == alone["memory_bytes"]
    assert _memory_digest(tmp_path / "ddp" / "state.pt") == _memory_digest(
        tmp_path / "alone" / "state.pt"
    )
