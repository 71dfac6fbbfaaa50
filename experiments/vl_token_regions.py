"""Do token scorers find the object a question is about? The planted-region measure on the
generated VQA stream's own tasks, with the pretrained tiny BLIP fine-tuned on each task.

For every task (colour, count, left): fine-tune ``blip_vqa_tiny`` (embedded pretraining) on the
task alone, then score its test questions with every scorer (target: the answer's
log-likelihood) and report exact match and, per scorer, how often the top-ranked token lies on
an object the question is about (``top1``) and which share of those tokens the top 16 of 64
(the demo's 25% token retention) keep (``recall16``). Chance: the region's share of the tokens.

    python experiments/vl_token_regions.py --out experiments/results/vl_demo
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

SCORERS = ("random", "rollout", "gradcam", "gradlrp", "atman")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train", type=int, default=600, help="training questions per task")
    p.add_argument("--test", type=int, default=100, help="scored test questions per task")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--keep", type=int, default=16, help="tokens kept per record (recall@k)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="experiments/results/vl_demo")
    args = p.parse_args()
    torch.set_num_threads(1)
    from avalanche_cts.harness.pretrain_vl import load_pretrained_blip
    from avalanche_cts.models import get_adapter
    from avalanche_cts.tokens.normalization import CLIP_MEAN, CLIP_STD
    from avalanche_cts.scorers import get_scorer
    from avalanche_cts.evaluation.metrics import vqa_exact_match
    from avalanche_cts.benchmarks.vl.scenes import VQA_TASKS, scene_vqa

    bm = scene_vqa(args.train, args.test, seed=args.seed, normalization=(CLIP_MEAN, CLIP_STD))
    rows = []
    for t, task in enumerate(VQA_TASKS):
        torch.manual_seed(args.seed)
        model = load_pretrained_blip("blip_vqa_tiny")
        adapter = get_adapter(model)
        opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.05)
        train = bm.train_stream[t].dataset
        start = time.perf_counter()
        model.train()
        for _ in range(args.epochs):
            order = torch.randperm(len(train))
            for i in range(0, len(train), 32):
                loss = adapter.sample_losses(bm.collate([train[int(j)] for j in order[i:i + 32]])).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
        model.eval()
        model.zero_grad(set_to_none=True)
        test = bm.test_stream[t].dataset
        batch = bm.collate([test[i] for i in range(len(test))])
        ids = adapter.generate(*adapter.image_states(batch["pixel_values"]), batch, (), max_new_tokens=4)
        preds = [s.strip() for s in bm.tokenizer.batch_decode(ids, skip_special_tokens=True)]
        regions = test._datasets[0].regions
        text = {k: v for k, v in batch.items() if k not in ("pixel_values", "task_labels", "references")}
        row = dict(task=task, exact_match=vqa_exact_match(preds, batch["references"]),
                   chance_top1=float(regions.float().mean()), train_s=time.perf_counter() - start)
        for name in SCORERS:
            scores = get_scorer(name, seed=args.seed) if name == "random" else get_scorer(name)
            s = scores(model, batch["pixel_values"], text)
            top = s.argsort(dim=1, descending=True, stable=True)
            row[f"{name}_top1"] = float(regions[torch.arange(len(top)), top[:, 0]].float().mean())
            kept = torch.zeros_like(regions).scatter(1, top[:, :args.keep], True)
            row[f"{name}_recall{args.keep}"] = float((kept & regions).sum() / regions.sum())
        rows.append(row)
        print(json.dumps(row), flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "token_regions.json").write_text(json.dumps(dict(settings=vars(args), rows=rows), indent=1))
    lines = [f"| task | exact match | chance | " + " | ".join(f"{n} top-1 / recall@{args.keep}" for n in SCORERS) + " |",
             "|---" * (3 + len(SCORERS)) + "|"]
    for r in rows:
        cells = [f"{r[f'{n}_top1']:.2f} / {r[f'{n}_recall{args.keep}']:.2f}" for n in SCORERS]
        lines.append(f"| {r['task']} | {r['exact_match']:.2f} | {r['chance_top1']:.2f} | " + " | ".join(cells) + " |")
    (out / "token_regions.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
