"""sparse-transformer report: evaluate an image or audio run and write what a person can look
at or hear.

Into --out: metrics.json (bits/dim for images, bits/byte for audio, on the first --eval-bytes
of valid and test), curve.png (from the run's metrics.csv) and, for images, samples.png
(unconditional, temperature 1.0) and completions.png (each test image, then samples given its
top half); for audio, unconditional.wav and continuation.wav (a real test clip of n_ctx/2
samples, taken where the music is audible rather than from a track's silent start, then
sampled). Each figure and file is printed as it comes. Existing files there are not replaced
without --force.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from sparse_transformer.checks import check_device, check_float, check_int, check_text

# Bytes of each split scored by default: a bounded prefix, so the report takes a minute on a
# CPU rather than scoring whole splits (all of Fashion-MNIST's test split is 7.8 MB).
EVAL_BYTES = 1 << 17
# Packages each kind's outputs need (cli.EXTRAS names their extras); curve.png's matplotlib is
# optional (the curve is left out without it).
NEEDS = {"image": ("PIL",), "audio": ("soundfile",)}
OUTPUTS = {"image": ("metrics.json", "curve.png", "samples.png", "completions.png"),
           "audio": ("metrics.json", "curve.png", "unconditional.wav", "continuation.wav")}


@dataclass
class ReportOptions:
    checkpoint: str
    out: str
    data: str | None = None
    data_root: str | None = None
    num: int = 16
    complete: int = 6
    per_image: int = 3
    seconds: float = 1.0
    eval_bytes: int = EVAL_BYTES
    temperature: float = 1.0
    seed: int = 0
    device: str = "auto"
    force: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        check_text("--checkpoint", self.checkpoint)
        check_text("--out", self.out)
        if Path(self.out).is_file():
            raise ValueError(f"--out {self.out} is a file, not a directory")
        for flag, value in (("--data", self.data), ("--data-root", self.data_root)):
            if value is not None:
                check_text(flag, value)
        for flag, value in (("--num", self.num), ("--complete", self.complete),
                            ("--per-image", self.per_image)):
            check_int(flag, value, 1, 4096)
        check_float("--seconds", self.seconds, 0, 3600, lo_open=True)
        check_int("--eval-bytes", self.eval_bytes, 0)
        check_float("--temperature", self.temperature, 0, lo_open=True)
        check_int("--seed", self.seed, 0, 2**63 - 1)
        check_device("--device", self.device)


def unit_for(meta: dict) -> str:
    """"bits/dim" for image data (one byte = one sub-pixel dimension), else "bits/byte"."""
    return "bits/dim" if meta.get("kind") == "image" else "bits/byte"


def media_report(checkpoint: str | Path, data: str | None, out_dir: str | Path, *,
                 data_root: str | None = None, n_unconditional: int = 16, n_complete: int = 6,
                 samples_per_image: int = 3, audio_seconds: float = 1.0,
                 eval_bytes: int | None = EVAL_BYTES, seed: int = 0, temperature: float = 1.0,
                 device: str = "auto", force: bool = False, progress: bool = True,
                 log: Callable[[str], None] | None = None) -> dict:
    """Evaluate a trained image or audio model and write its report into ``out_dir`` (see the
    module docstring); ``data`` None means the data the run trained on. ``eval_bytes`` bounds
    the bytes of each split scored (0 or None: all). ``log(line)`` hears each figure and file
    as it comes. Returns the metrics."""
    opts = ReportOptions(str(checkpoint), str(out_dir), data, data_root, n_unconditional,
                         n_complete, samples_per_image, audio_seconds, eval_bytes or 0,
                         temperature, seed, device, force, progress)
    say = log or (lambda line: None)

    import numpy as np
    import torch

    from sparse_transformer.cli import require
    from sparse_transformer.cli.common import run_data
    from sparse_transformer.codecs import (
        atomic_write,
        check_new_files,
        loud_start,
        unflatten_images,
        write_completion_grid,
        write_mu_law_wav,
        write_png_grid,
    )
    from sparse_transformer.evaluate import evaluate_bpb
    from sparse_transformer.sample.generate import generate
    from sparse_transformer.sample.media import complete_images
    from sparse_transformer.train.checkpoint import find_checkpoint, load_model
    from sparse_transformer.train.distributed import pick_device
    from sparse_transformer.train.metrics import plot_loss_curve

    def media_data(train_meta: dict):
        ds = run_data(train_meta, opts.data, opts.data_root)
        if ds.kind not in OUTPUTS:
            raise ValueError(f"{ds.name}: media reports are for image or audio data, not "
                             f"{ds.kind!r}")
        return ds

    ds = media_data({}) if opts.data else None  # a given --data is checked before loading
    dev = pick_device(opts.device)
    model, ckpt = load_model(opts.checkpoint, dev)
    ds = ds or media_data(ckpt.train)
    kind, unit = ds.kind, unit_for(ds.meta)
    require(f"report on {kind} data", *NEEDS[kind])  # before the work, as the files below
    out = Path(opts.out)
    check_new_files([out / name for name in OUTPUTS[kind]], opts.force)
    n_ctx = model.cfg.n_ctx
    record = ds.record_size if kind == "image" else None
    res = {"unit": unit, "data": ds.name}
    for split in ("valid", "test"):
        data = ds.split(split)
        # at least one window: a prefix shorter than n_ctx holds nothing to score
        limit = max(opts.eval_bytes, n_ctx) if opts.eval_bytes else None
        r = evaluate_bpb(model, data, max_bytes=limit, record_size=record,
                         batch_size=64 if dev.type != "cpu" else 8, device=dev,
                         progress=opts.progress)
        res[split] = round(r.bits_per_byte, 4)
        res[f"{split}_scored"] = r.n_scored
        part = "all" if r.n_scored >= data.size else f"the first {r.n_scored:,}"
        say(f"{split}: {r.bits_per_byte:.4f} {unit} ({part} of {data.size:,} bytes scored)")
    out.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(opts.seed)
    if kind == "image":
        shape = tuple(ds.meta["shape"])
        empty = torch.zeros(opts.num, 0, dtype=torch.long)
        imgs = generate(model, empty, n_ctx, temperature=opts.temperature, generator=gen,
                        progress=opts.progress)
        grid = unflatten_images(imgs.cpu().numpy().astype(np.uint8), shape)
        say(f"wrote {write_png_grid(grid, out / 'samples.png')}")
        test = unflatten_images(np.asarray(ds.split("test")[: opts.complete * n_ctx]), shape)
        comp = complete_images(model, test, n_samples=opts.per_image,
                               temperature=opts.temperature, generator=gen,
                               progress=opts.progress)
        say(f"wrote {write_completion_grid(test, comp, out / 'completions.png')}")
    else:
        rate = int(ds.meta.get("sample_rate", 12000))
        n_new = int(opts.seconds * rate)
        empty = torch.zeros(1, 0, dtype=torch.long)
        q = generate(model, empty, n_new, temperature=opts.temperature, generator=gen,
                     progress=opts.progress)
        path = write_mu_law_wav(out / "unconditional.wav", q[0].cpu().numpy().astype(np.uint8),
                                rate)
        say(f"wrote {path} ({n_new / rate:g} s)")
        test = np.asarray(ds.split("test"))
        start = loud_start(test, n_ctx // 2)  # a clip with music in it, not a silent intro
        prompt = torch.from_numpy(test[start : start + n_ctx // 2].astype(np.int64))
        res["continuation_start"] = start
        q = generate(model, prompt, n_new, temperature=opts.temperature, generator=gen,
                     progress=opts.progress)
        path = write_mu_law_wav(out / "continuation.wav", q.cpu().numpy().astype(np.uint8), rate)
        say(f"wrote {path} ({prompt.numel() / rate:g} s of the test split from sample "
            f"{start:,}, then {n_new / rate:g} s sampled)")
    step_dir = find_checkpoint(opts.checkpoint)  # RUN/checkpoints/step-N
    for cand in (step_dir.parent.parent / "metrics.csv", Path(opts.checkpoint) / "metrics.csv"):
        if cand.is_file():
            if plot_loss_curve(cand, out / "curve.png", unit) is not None:
                say(f"wrote {out / 'curve.png'}")
            break
    atomic_write(out / "metrics.json", lambda tmp: tmp.write_text(json.dumps(res, indent=2)))
    say(f"wrote {out / 'metrics.json'}")
    return res


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="evaluate an image/audio run; write samples (PNG/WAV)",
                       description=__doc__)
    d = ReportOptions("-", "-")
    p.add_argument("--checkpoint", "-c", required=True, help="run directory or step folder")
    p.add_argument("--data", help="data set name or prepared directory (default: the data "
                   "the run trained on)")
    p.add_argument("--data-root", help="where a named --data is prepared (default: data)")
    p.add_argument("--out", required=True, help="directory for the PNG/WAV/JSON outputs")
    p.add_argument("--num", type=int, default=d.num, help="unconditional images")
    p.add_argument("--complete", type=int, default=d.complete, help="test images to complete")
    p.add_argument("--per-image", type=int, default=d.per_image, help="completions per image")
    p.add_argument("--seconds", type=float, default=d.seconds, help="audio to sample, seconds")
    p.add_argument("--eval-bytes", type=int, default=d.eval_bytes,
                   help="bytes of each split scored, from its start (0: all)")
    p.add_argument("--temperature", type=float, default=d.temperature,
                   help="sampling temperature (> 0)")
    p.add_argument("--seed", type=int, default=d.seed, help="sampling seed")
    p.add_argument("--device", default=d.device, help="auto, cpu, cuda or cuda:N")
    p.add_argument("--force", action="store_true", help="replace outputs that exist in --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    res = media_report(args.checkpoint, args.data, args.out, data_root=args.data_root,
                       n_unconditional=args.num, n_complete=args.complete,
                       samples_per_image=args.per_image, audio_seconds=args.seconds,
                       eval_bytes=args.eval_bytes, seed=args.seed,
                       temperature=args.temperature, device=args.device, force=args.force,
                       progress=not args.no_progress, log=lambda line: print(line, flush=True))
    print(f"{res['data']}: valid {res['valid']:.4f} {res['unit']}, test {res['test']:.4f} "
          f"{res['unit']}; outputs in {args.out}")
    return 0
