"""Throughput of the paper-scale training path: ViT-B/16 at 224 px, bf16, through Avalanche.

Training images/s (median step after warm-up, data loading included, same in-memory data and
loader settings for every case) and peak GPU memory of:

* ``plain``: a plain timm loop (``model(x)``, cross-entropy, AdamW) on B images;
* ``strategy``: Avalanche ``Naive`` + the training path + ``CoreTokensetReplayPlugin`` on B
  images, empty memory, no token dropout: the framework's overhead (goal <= 1.10 x plain);
* ``replay_zero`` / ``replay_sparse``: B/2 new images (token dropout at t) + B/2 memory rows
  keeping t of the tokens, zero-filled or sparse: the same rows per step as ``plain``;
* ``mem_full`` / ``mem_sparse``: forward + backward of B memory rows through the sparse token
  path with all T tokens vs round(t*T) tokens (goal: mem_sparse <= 0.25 x mem_full at t=0.1).

Memory updates (``CoreTokensetBuffer.post_adapt``, what runs after each experience, in the
buffer's own precision): images/s scored by each scorer of ``avalanche_cts.scorers`` (random
selector, every sample kept) and by GradMatch + AtMan (the Table 2 setting), with peak memory.
New images get token dropout at t in the replay cases (the plugin's default). Fused attention
is checked to be on during training.

Extras (``--extras``, all by default):

* ``mfu``: forward FLOPs per image counted by ``torch.utils.flop_counter.FlopCounterMode``,
  x3 for a training step, at the plain loop's images/s, against the device's dense peak
  (``--peak-tflops``, known for H100/H200 bf16) and, on CUDA, a measured 8192^3 matmul;
* ``dropout``: new data dropped by the memory's scorer (rollout every step or once per
  experience, GradLRP once per experience) against random dropout, per step and per
  experience (zero replay, a filled memory);
* ``atman``: AtMan's scoring of some images against T + 1 plain forwards of them;
* ``experience``: one ImageNet-100-shaped experience (20 classes x ``--per-class`` images):
  a training epoch against building a 10%-of-bytes memory (t = sqrt(0.1)) with GradMatch +
  rollout and GradMatch + AtMan.

``--compile`` adds rows with ``torch.compile``'d blocks (a copy of the model): the plain loop
and sparse replay, whose rows share one kept-token count (static shapes). Writes
``experiments/results/gpu_throughput_<device>.{json,md}``.

    python experiments/gpu_throughput.py                      # GPU: ViT-B/16, batch 128, bf16
    python experiments/gpu_throughput.py --compile            # + rows with compiled blocks
    python experiments/gpu_throughput.py --cpu                # small CPU fallback (tiny ViT)
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Dict, List, Optional

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from avalanche.core import SupervisedPlugin
from avalanche.evaluation.metrics import accuracy_metrics
from avalanche.training.plugins import EvaluationPlugin

from avalanche_cts import CoreTokensetBuffer, CoreTokensetReplayPlugin, collate_tokens, get_adapter
from avalanche_cts.benchmarks import synthetic_benchmark
from avalanche_cts.models import create_model, model_normalization
from avalanche_cts.scorers import get_scorer, list_scorers
from avalanche_cts.strategies.training import Naive, compile_blocks, set_fused_attention

RESULTS = Path(__file__).resolve().parent / "results"
SETTINGS = {  # model, image (C, H), batch, steps, warm-up, scorer images, precision, workers
    "gpu": dict(model="vit_base_patch16_224", channels=3, size=224, batch=128, steps=30, warmup=8,
                score_images=256, precision="bf16", workers=8),
    "cpu": dict(model="vit_fmnist_tiny", channels=1, size=28, batch=32, steps=8, warmup=2,
                score_images=32, precision="fp32", workers=0),
}
PEAK_TFLOPS = {"NVIDIA H200": 989.4, "NVIDIA H100 80GB HBM3": 989.4}
"""Dense bf16 peak of known devices (vendor specifications), TFLOP/s."""
EXTRAS = ("mfu", "dropout", "atman", "experience")
DROPOUT_CASES = {  # dropout tokens, refresh, scorer
    "random": ("random", "step", None), "matched_rollout_step": ("matched", "step", "rollout"),
    "matched_rollout_experience": ("matched", "experience", "rollout"),
    "matched_gradlrp_experience": ("matched", "experience", "gradlrp")}


class _StepClock(SupervisedPlugin):
    """Time stamps after every training iteration (synchronised on CUDA), and whether fused
    attention was on in every step."""

    def __init__(self, cuda: bool, model):
        super().__init__()
        self.cuda, self.model, self.stamps, self.fused = cuda, model, [], True

    def after_training_iteration(self, strategy, **kwargs):
        if self.cuda:
            torch.cuda.synchronize()
        self.stamps.append(time.perf_counter())
        self.fused = self.fused and all(_fused_flags(self.model))


def _median_step(stamps: List[float], warmup: int) -> float:
    steps = [b - a for a, b in zip(stamps, stamps[1:])][warmup:]
    return statistics.median(steps)


def _peak(cuda: bool) -> Optional[float]:
    return torch.cuda.max_memory_allocated() / 2**30 if cuda else None


def _reset(cuda: bool) -> None:
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _fused_flags(model) -> List[bool]:
    return [m.fused_attn for m in model.modules() if hasattr(m, "fused_attn")]


def plain_loop(model, data, batch, s, device, cuda) -> Dict:
    """A plain timm training loop over ``data`` (same loader settings as the strategy)."""
    loader = DataLoader(
        data,
        batch_size=batch,
        shuffle=True,
        num_workers=s["workers"],
        pin_memory=cuda,
        drop_last=True,
        persistent_workers=s["workers"] > 0,
    )
    opt = torch.optim.AdamW(model.parameters(), 1e-4)
    amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=s["precision"] == "bf16")
    model.train()
    _reset(cuda)
    stamps = []
    for x, y, *_ in loader:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        opt.zero_grad(set_to_none=True)
        with amp:
            loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        if cuda:
            torch.cuda.synchronize()
        stamps.append(time.perf_counter())
    return dict(step_s=_median_step(stamps, s["warmup"]), rows=batch, peak_gib=_peak(cuda))


def strategy_loop(model, exp, plugin, batch, s, device, cuda, extra=()) -> Dict:
    """``Naive`` + training path + plugin (and the ``extra`` plugins) on one experience;
    rows = new + memory rows."""
    clock = _StepClock(cuda, model)
    strategy = Naive(
        model=model,
        optimizer=torch.optim.AdamW(model.parameters(), 1e-4),
        train_mb_size=batch,
        train_epochs=1,
        device=device,
        evaluator=EvaluationPlugin(accuracy_metrics(experience=True), loggers=[]),
        plugins=[plugin, clock, *extra],
        precision=s["precision"],
    )
    _reset(cuda)
    strategy.train(
        exp, num_workers=s["workers"], drop_last=True, persistent_workers=s["workers"] > 0
    )
    mem = plugin.batch_size_mem if plugin.storage_policy.num_records else 0
    return dict(
        step_s=_median_step(clock.stamps, s["warmup"]),
        rows=batch + mem,
        peak_gib=_peak(cuda),
        fused_attention=clock.fused,
    )


def _filled(model, exp, t, device, scorer="random", selector="random") -> CoreTokensetBuffer:
    buf = CoreTokensetBuffer(
        budget_bytes=10**12, token_retention=t, selector=selector, scorer=scorer, batch_size=64
    )
    buf.post_adapt(SimpleNamespace(model=model, device=device), exp)
    return buf


def memory_batches(model, exp, t, batch, s, device, cuda) -> Dict[str, Dict]:
    """Forward + backward of ``batch`` memory rows, all tokens vs ``t`` of them (sparse path)."""
    adapter = get_adapter(model)
    opt = torch.optim.AdamW(model.parameters(), 1e-4)
    amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=s["precision"] == "bf16")
    out = {}
    for name, keep in (("mem_full", 1.0), ("mem_sparse", t)):
        buf = _filled(model, exp, keep, device)
        ds = buf.dataset()
        b = collate_tokens([ds[i % len(ds)] for i in range(batch)]).to(device)
        values = buf.codec.decode(b.values)
        _reset(cuda)
        times = []
        for _ in range(s["warmup"] + s["steps"]):
            t0 = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            with amp:
                loss = F.cross_entropy(
                    adapter.forward_tokens(values, b.positions, b.valid), b.labels
                )
            loss.backward()
            opt.step()
            if cuda:
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        out[name] = dict(
            step_s=statistics.median(times[s["warmup"] :]),
            rows=batch,
            tokens=int(b.positions.shape[1]),
            peak_gib=_peak(cuda),
        )
    return out


def memory_updates(model, exp, t, device, cuda) -> Dict[str, Dict]:
    """Images/s of ``post_adapt`` (keeping every sample, scoring its tokens) per scorer."""
    out = {}
    pairs = [("random", sc) for sc in list_scorers()] + [("gradmatch", "atman")]
    for sel, sc in pairs:
        _reset(cuda)
        t0 = time.perf_counter()
        buf = _filled(model, exp, t, device, scorer=sc, selector=sel)
        if cuda:
            torch.cuda.synchronize()
        sec = time.perf_counter() - t0
        out[f"{sel}+{sc}"] = dict(
            images_per_s=len(exp.dataset) / sec,
            seconds=sec,
            records=buf.num_records,
            peak_gib=_peak(cuda),
            fused_attention_after=all(_fused_flags(model)),
        )
    return out


def _sync(cuda: bool) -> None:
    if cuda:
        torch.cuda.synchronize()


def _amp(s: Dict, device):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=s["precision"] == "bf16")


def compiled_cases(model, new_exp, mem_exp, t, s, device, cuda, backend: str) -> Dict:
    """The plain loop and sparse replay on a copy of the model with compiled blocks."""
    twin = copy.deepcopy(model)
    compile_blocks(twin, backend=backend)
    b = s["batch"]
    cases = {"plain_compiled": plain_loop(twin, new_exp.dataset, b, s, device, cuda)}
    plugin = CoreTokensetReplayPlugin(_filled(twin, mem_exp, t, device), replay_mode="sparse",
                                      batch_size_mem=b // 2)
    cases["replay_sparse_compiled"] = strategy_loop(twin, new_exp, plugin, b // 2, s, device, cuda)
    return cases


def forward_flops(model, s, device) -> int:
    """FLOPs of one image's forward pass (``FlopCounterMode``, 2 per multiply-add)."""
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.randn(1, s["channels"], s["size"], s["size"], device=device)
    model.eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    model.train()
    return int(counter.get_total_flops())


def matmul_tflops(device, n: int = 8192, repeats: int = 10) -> float:
    """TFLOP/s of an ``n``^3 bf16 matmul on ``device`` (a measured peak)."""
    m = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        m @ m
    _sync(True)
    t0 = time.perf_counter()
    for _ in range(repeats):
        m @ m
    _sync(True)
    return repeats * 2 * n**3 / (time.perf_counter() - t0) / 1e12


def mfu(model, plain: Dict, s, device, cuda, peak: Optional[float]) -> Dict:
    """Model FLOP utilisation of the plain loop (``plain``: its timing row): 3x the counted
    forward FLOPs per image (forward + backward), at its images/s."""
    fwd = forward_flops(model, s, device)
    achieved = 3 * fwd * plain["rows"] / plain["step_s"] / 1e12
    out = dict(fwd_gflops_per_image=fwd / 1e9, achieved_tflops=achieved, peak_tflops=peak,
               mfu_vs_peak=None if peak is None else achieved / peak)
    if cuda:
        mm = matmul_tflops(device)
        out.update(matmul_tflops=mm, mfu_vs_matmul=achieved / mm)
    return out


def dropout_cost(model, new_exp, mem_exp, t, s, device, cuda) -> Dict:
    """Per-step and per-experience time of new-data dropout by the memory's scorer against
    random dropout (zero replay, B/2 new + B/2 memory rows); the experience time includes the
    scoring passes."""
    b = s["batch"]
    out = {}
    for name, (tokens, refresh, scorer) in DROPOUT_CASES.items():
        plugin = CoreTokensetReplayPlugin(
            _filled(model, mem_exp, t, device, scorer=scorer or "random"), replay_mode="zero",
            batch_size_mem=b // 2, dropout_tokens=tokens, dropout_refresh=refresh)
        _sync(cuda)
        t0 = time.perf_counter()
        c = strategy_loop(model, new_exp, plugin, b // 2, s, device, cuda)
        _sync(cuda)
        out[name] = dict(c, experience_s=time.perf_counter() - t0)
    for c in out.values():
        c["step_over_random"] = c["step_s"] / out["random"]["step_s"]
        c["experience_over_random"] = c["experience_s"] / out["random"]["experience_s"]
    return out


def atman_cost(model, exp, s, device, cuda, n: int) -> Dict:
    """AtMan's scores of ``n`` images against T + 1 plain forwards of them (what AtMan's
    one-token-at-a-time perturbation amounts to), same precision."""
    x = torch.stack([exp.dataset[i][0] for i in range(n)]).to(device)
    y = torch.tensor([int(exp.dataset[i][1]) for i in range(n)], device=device)
    scorer = get_scorer("atman")
    model.eval()
    with _amp(s, device):
        scorer.score(model, x[:2], y[:2])
        _sync(cuda)
        t0 = time.perf_counter()
        tokens = scorer.score(model, x, y).shape[1]
        _sync(cuda)
        atman_s = time.perf_counter() - t0
        with torch.no_grad():
            model(x)
            _sync(cuda)
            t0 = time.perf_counter()
            for _ in range(tokens + 1):
                model(x)
            _sync(cuda)
    model.train()
    fwd_s = time.perf_counter() - t0
    return dict(images=n, tokens=tokens, atman_s=atman_s, t_plus_1_forwards_s=fwd_s,
                ratio=atman_s / fwd_s)


def experience_cost(model, s, device, cuda, per_class: int) -> Dict:
    """One ImageNet-100-shaped experience (20 classes x ``per_class`` images): a training epoch
    against building a 10%-of-bytes memory (t = sqrt(0.1)) with GradMatch + rollout / AtMan."""
    exp = synthetic_benchmark(
        1, n_classes=20, train_per_class=per_class, test_per_class=1, image_size=s["size"],
        channels=s["channels"], seed=1, normalization=model_normalization(s["model"], None),
    ).train_stream[0]
    n = len(exp.dataset)
    empty = CoreTokensetReplayPlugin(CoreTokensetBuffer(budget_bytes=1, token_retention=0.1),
                                     dropout=1.0)
    _sync(cuda)
    t0 = time.perf_counter()
    strategy_loop(model, exp, empty, s["batch"], s, device, cuda)
    _sync(cuda)
    epoch = time.perf_counter() - t0
    out = dict(images=n, train_epoch_s=epoch, train_images_per_s=n / epoch)
    for scorer in ("rollout", "atman"):
        buf = CoreTokensetBuffer(budget_bytes=int(0.1 * n * s["channels"] * s["size"] ** 2),
                                 token_retention=0.1 ** 0.5, selector="gradmatch", scorer=scorer,
                                 batch_size=2 * s["batch"])
        _reset(cuda)
        t0 = time.perf_counter()
        buf.post_adapt(SimpleNamespace(model=model, device=device), exp)
        _sync(cuda)
        sec = time.perf_counter() - t0
        out[f"memory_gradmatch+{scorer}"] = dict(seconds=sec, records=buf.num_records,
                                                 over_epoch=sec / epoch, peak_gib=_peak(cuda))
    return out


def extras(args, s, model, new_exp, mem_exp, plain: Dict, device, cuda) -> Dict:
    """The measures of ``--extras`` (see the module docstring)."""
    names = [e for e in args.extras.split(",") if e]
    unknown = sorted(set(names) - set(EXTRAS))
    if unknown:
        raise ValueError(f"unknown extras {unknown}: choose among {', '.join(EXTRAS)}")
    out = {}
    if "mfu" in names:
        peak = args.peak_tflops or (PEAK_TFLOPS.get(torch.cuda.get_device_name()) if cuda else None)
        out["mfu"] = mfu(model, plain, s, device, cuda, peak)
    if "dropout" in names:
        out["dropout"] = dropout_cost(model, new_exp, mem_exp, args.retention, s, device, cuda)
    if "atman" in names:
        out["atman"] = atman_cost(model, mem_exp, s, device, cuda, n=32 if cuda else 4)
    if "experience" in names:
        out["experience"] = experience_cost(model, s, device, cuda,
                                            args.per_class or (650 if cuda else 4))
    return out


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cpu", action="store_true",
                   help="small CPU fallback even when CUDA is present")
    p.add_argument("--model", help="timm model name (default: per device)")
    p.add_argument("--batch", type=int, help="rows per training step")
    p.add_argument("--retention", type=float, default=0.1, help="token retention t of the memory")
    p.add_argument("--steps", type=int)
    p.add_argument("--compile", action="store_true",
                   help="add rows with torch.compile'd blocks (plain, sparse replay)")
    p.add_argument("--compile-backend", default="inductor", help="torch.compile backend")
    p.add_argument("--extras", default=",".join(EXTRAS),
                   help=f"comma-separated extra measures among {', '.join(EXTRAS)} ('' for none)")
    p.add_argument("--peak-tflops", type=float,
                   help="the device's dense peak for MFU (default: known devices' bf16 peak)")
    p.add_argument("--per-class", type=int,
                   help="images per class of the ImageNet-100-shaped experience "
                        "(default 650 on CUDA, 4 on the CPU)")
    p.add_argument("--skip-scorers", action="store_true")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    p.add_argument("--out", default=str(RESULTS))
    return p.parse_args(argv)


def setup(args, cuda: bool):
    """``(settings, device, model, new-data experience, memory experience)``."""
    s = dict(SETTINGS["gpu" if cuda else "cpu"])
    s.update({k: v for k, v in dict(model=args.model, batch=args.batch, steps=args.steps).items()
              if v})
    device = torch.device("cuda" if cuda else "cpu")
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if args.threads:
        torch.set_num_threads(args.threads)
    b = s["batch"]
    image = dict(image_size=s["size"], channels=s["channels"], test_per_class=1, seed=0)
    new_exp = synthetic_benchmark(
        1, n_classes=2, train_per_class=(s["warmup"] + s["steps"] + 1) * b // 2, **image
    ).train_stream[0]
    # the memory holds an earlier experience (id 1 of its stream; the timed one is id 0): a
    # buffer refuses an experience it already holds
    mem_exp = synthetic_benchmark(
        2, n_classes=4, train_per_class=s["score_images"] // 2, **image).train_stream[1]
    torch.manual_seed(0)
    model = create_model(s["model"], num_classes=100, img_size=s["size"],
                         in_chans=s["channels"]).to(device)
    set_fused_attention(model, True)
    return s, device, model, new_exp, mem_exp


def training_cases(model, new_exp, mem_exp, t: float, s: Dict, device, cuda: bool) -> Dict:
    """Step times of the plain loop, the strategy with an empty plugin, zero-filled and sparse
    replay, and memory batches alone."""
    b = s["batch"]
    cases = {"plain": plain_loop(model, new_exp.dataset, b, s, device, cuda)}
    empty = CoreTokensetReplayPlugin(CoreTokensetBuffer(budget_bytes=1, token_retention=t),
                                     dropout=1.0)
    cases["strategy"] = strategy_loop(model, new_exp, empty, b, s, device, cuda)
    for mode in ("zero", "sparse"):
        plugin = CoreTokensetReplayPlugin(_filled(model, mem_exp, t, device), replay_mode=mode,
                                          batch_size_mem=b // 2)
        cases[f"replay_{mode}"] = strategy_loop(model, new_exp, plugin, b // 2, s, device, cuda)
    cases.update(memory_batches(model, mem_exp, t, b, s, device, cuda))
    return cases


def main(argv=None) -> Dict:
    args = parse_args(argv)
    cuda = torch.cuda.is_available() and not args.cpu
    s, device, model, new_exp, mem_exp = setup(args, cuda)
    t = args.retention
    res: Dict = dict(
        settings=s, retention=t, device=str(device), compile=args.compile,
        device_name=torch.cuda.get_device_name() if cuda else platform.processor() or platform.machine(),
        torch=torch.__version__, threads=torch.get_num_threads())
    cases = res["training"] = training_cases(model, new_exp, mem_exp, t, s, device, cuda)
    if args.compile:
        cases.update(compiled_cases(model, new_exp, mem_exp, t, s, device, cuda,
                                    args.compile_backend))
    for c in cases.values():
        c["images_per_s"] = c["rows"] / c["step_s"]
    plain = cases["plain"]["step_s"]
    res["ratios"] = dict(
        strategy_over_plain=cases["strategy"]["step_s"] / plain,
        replay_zero_over_plain=cases["replay_zero"]["step_s"] / plain,
        replay_sparse_over_plain=cases["replay_sparse"]["step_s"] / plain,
        mem_sparse_over_mem_full=cases["mem_sparse"]["step_s"] / cases["mem_full"]["step_s"],
        **{f"{k}_over_plain": c["step_s"] / plain for k, c in cases.items() if "compiled" in k},
    )
    res["goals_met"] = dict(
        plugin_overhead_le_10pct=res["ratios"]["strategy_over_plain"] <= 1.10,
        sparse_memory_le_25pct=res["ratios"]["mem_sparse_over_mem_full"] <= 0.25,
    )
    if not args.skip_scorers:
        res["memory_update"] = memory_updates(model, mem_exp, t, device, cuda)
    res["extras"] = extras(args, s, model, new_exp, mem_exp, cases["plain"], device, cuda)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"gpu_throughput_{device.type}"
    (out / f"{stem}.json").write_text(json.dumps(res, indent=1))
    (out / f"{stem}.md").write_text(_table(res))
    print(_table(res))
    return res


def _table(res: Dict) -> str:
    s = res["settings"]
    lines = [
        f"{s['model']} {s['channels']}x{s['size']}px, {s['precision']}, batch {s['batch']}, "
        f"t = {res['retention']}, {res['device_name']} ({res['device']}), compile={res['compile']}",
        "",
        "| case | rows/step | ms/step | images/s | peak GiB | fused attention |",
        "|---|---|---|---|---|---|",
    ]
    for name, c in res["training"].items():
        lines.append(
            f"| {name} | {c['rows']} | {1000 * c['step_s']:.1f} | {c['images_per_s']:.0f} | "
            f"{_gib(c['peak_gib'])} | {c.get('fused_attention', '')} |"
        )
    lines += ["", "| ratio | value |", "|---|---|"]
    lines += [f"| {k} | {v:.3f} |" for k, v in res["ratios"].items()]
    if "memory_update" in res:
        lines += [
            "",
            "| memory update (selector+scorer) | images/s | records | peak GiB |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| {k} | {v['images_per_s']:.1f} | {v['records']} | {_gib(v['peak_gib'])} |"
            for k, v in res["memory_update"].items()
        ]
    return "\n".join(lines + _extras_table(res.get("extras", {}))) + "\n"


def _extras_table(ex: Dict) -> List[str]:
    lines = ["", "| extra | value |", "|---|---|"]
    if "mfu" in ex:
        m = ex["mfu"]
        lines.append(f"| forward GFLOP/image | {m['fwd_gflops_per_image']:.2f} |")
        lines.append(f"| achieved TFLOP/s (plain) | {m['achieved_tflops']:.3g} |")
        for k in ("mfu_vs_peak", "mfu_vs_matmul"):
            if m.get(k) is not None:
                lines.append(f"| {k} | {100 * m[k]:.1f}% |")
    for name, c in ex.get("dropout", {}).items():
        lines.append(f"| dropout {name}: step, experience vs random | "
                     f"{c['step_over_random']:.3f}x, {c['experience_over_random']:.3f}x |")
    if "atman" in ex:
        a = ex["atman"]
        lines.append(f"| AtMan vs T + 1 forwards ({a['images']} images, T = {a['tokens']}) | "
                     f"{a['atman_s']:.3g} s vs {a['t_plus_1_forwards_s']:.3g} s ({a['ratio']:.2f}x) |")
    if "experience" in ex:
        e = ex["experience"]
        lines.append(f"| experience of {e['images']} images: one epoch | {e['train_epoch_s']:.3g} s |")
        lines += [f"| {k} | {v['seconds']:.3g} s ({v['over_epoch']:.2f} epochs), {v['records']} records |"
                  for k, v in e.items() if k.startswith("memory_")]
    return lines if len(lines) > 3 else []


def _gib(v: Optional[float]) -> str:
    return "-" if v is None else f"{v:.2f}"


if __name__ == "__main__":
    main()
