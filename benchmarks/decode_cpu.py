"""Decoding speed on the CPU, within the context and past it (issue 19's target).

``generate`` from a short prompt, 600 bytes, through the pattern-aware cache; every byte's
time is taken between two consecutive draws, so the bytes within the context (the first
n_ctx - 1 - prompt) and those past it (where the window slides) are timed apart. Random
weights: the work per byte does not depend on them. The best of ``--repeats`` runs after a
warm-up call, as a new user would see it after the first sample.

    python benchmarks/decode_cpu.py                      # wiki-small, 600 bytes
    OMP_NUM_THREADS=1 python benchmarks/decode_cpu.py    # one intra-op thread
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sparse_transformer import ModelConfig, SparseTransformer, generate  # noqa: E402

GENERATE = sys.modules["sparse_transformer.sample.generate"]  # the module (its name is taken)


def run(model: SparseTransformer, prompt: bytes, n_bytes: int, slide: int | None) -> dict:
    stamps: list[float] = []
    real = GENERATE.apply_filters  # called once per byte, right after its logits

    def stamped(*args, **kwargs):
        stamps.append(time.perf_counter())
        return real(*args, **kwargs)

    GENERATE.apply_filters = stamped
    try:
        t0 = time.perf_counter()
        generate(model, prompt, n_bytes, seed=0, slide=slide)
        wall = time.perf_counter() - t0
    finally:
        GENERATE.apply_filters = real
    gaps = [b - a for a, b in zip(stamps, stamps[1:])]  # gaps[k]: byte k drawn -> k + 1's logits
    within = model.cfg.n_ctx - 1 - len(prompt)  # bytes 0 .. within - 1 see the whole prefix
    fast, slow = gaps[:within - 1], gaps[within - 1:]
    return dict(bytes_per_s=n_bytes / wall, within_bytes_per_s=len(fast) / sum(fast),
                past_bytes_per_s=len(slow) / sum(slow), wall_s=wall)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="wiki-small")
    ap.add_argument("--n-bytes", type=int, default=600)
    ap.add_argument("--slide", type=int, default=None, help="generate's slide (default its own)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", help="also write the result here")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    model = SparseTransformer(ModelConfig.from_preset(args.preset)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    prompt = b"<page>\n  <title>"
    generate(model, prompt, 50, seed=0)  # warm-up: allocations, first-call paths
    runs = [run(model, prompt, args.n_bytes, args.slide) for _ in range(args.repeats)]
    best = dict(max(runs, key=lambda r: r["bytes_per_s"]))
    best.update(preset=args.preset, n_bytes=args.n_bytes, threads=torch.get_num_threads(),
                ratio_past_to_within=best["past_bytes_per_s"] / best["within_bytes_per_s"],
                runs=runs)
    print(f"{args.preset}, {args.n_bytes} bytes (process: {best['threads']} intra-op threads; "
          f"generate decodes with one on the CPU): "
          f"{best['bytes_per_s']:.0f} bytes/s; within the context "
          f"{best['within_bytes_per_s']:.0f}, past it {best['past_bytes_per_s']:.0f} "
          f"({best['ratio_past_to_within']:.2f}x)")
    if args.json:
        Path(args.json).write_text(json.dumps(best, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
