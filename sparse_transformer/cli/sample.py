"""sparse-transformer sample: draw bytes from a checkpoint (temperature 1.0 as in paper 6).

Text goes to stdout (or --out FILE); an image model writes one PNG grid (--out, default
samples.png) and an audio model one WAV per sample (--seconds long, default 1 s). An existing
file is never replaced without --force.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

from sparse_transformer.checks import (
    check_device,
    check_float,
    check_int,
    check_memory,
    check_text,
)

MAX_SAMPLES = 4096  # sequences decoded together: one batch
# One model step per byte: a million is hours of decoding on a GPU and weeks on a CPU, and the
# samples so far are copied once per step (quadratic beyond that).
MAX_N_BYTES = 1_000_000
MAX_SECONDS = 3600.0
AUDIO_SECONDS = 1.0  # default audio length: long enough to hear a phrase
# Packages the sample writers of each data kind import (cli.EXTRAS names their extras).
NEEDS = {"image": ("PIL",), "audio": ("soundfile",)}


@dataclass
class SampleOptions:
    checkpoint: str
    prompt: str | None = None
    prompt_file: str | None = None
    n_bytes: int | None = None
    seconds: float | None = None
    num_samples: int = 1
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    seed: int | None = None
    out: str | None = None
    force: bool = False
    device: str = "auto"
    progress: bool = True
    cache: bool = True
    crop_prompt: bool = False

    def __post_init__(self) -> None:
        check_text("--checkpoint", self.checkpoint)
        if self.prompt is not None and self.prompt_file is not None:
            raise ValueError("give --prompt or --prompt-file, not both")
        if self.prompt_file is not None and not Path(self.prompt_file).is_file():
            raise FileNotFoundError(f"--prompt-file {self.prompt_file} is not a file")
        if self.n_bytes is not None:
            check_int("--n-bytes", self.n_bytes, 0, MAX_N_BYTES)
        if self.seconds is not None:
            check_float("--seconds", self.seconds, 0, MAX_SECONDS, lo_open=True)
            if self.n_bytes is not None:
                raise ValueError("give --n-bytes or --seconds, not both")
        check_int("--num-samples", self.num_samples, 1, MAX_SAMPLES)
        if self.n_bytes is not None:
            # the samples live as int64 on the device and again on the host while written
            check_memory(f"--num-samples {self.num_samples} x --n-bytes {self.n_bytes:,}",
                         2 * 8 * self.num_samples * self.n_bytes,
                         hint="sample fewer or shorter sequences")
        check_float("--temperature", self.temperature, 0, lo_open=True)
        if self.top_k is not None:
            check_int("--top-k", self.top_k, 1)
        if self.top_p is not None:
            check_float("--top-p", self.top_p, 0, 1, lo_open=True)
        if self.seed is not None:
            check_int("--seed", self.seed, 0, 2**63 - 1)
        if self.out is not None:
            check_text("--out", self.out)
        check_device("--device", self.device)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sample", help="sample bytes, images or audio from a checkpoint",
                       description=__doc__)
    d = SampleOptions("-")
    p.add_argument("--checkpoint", "-c", required=True, help="run directory or step folder")
    p.add_argument("--prompt", help="text the samples continue (UTF-8; default: none)")
    p.add_argument("--prompt-file", help="file whose bytes the samples continue")
    p.add_argument("--n-bytes", type=int,
                   help=f"bytes to generate, at most {MAX_N_BYTES:,} (default: 500 for text, "
                   f"the rest of one image for image models, --seconds of audio)")
    p.add_argument("--seconds", type=float,
                   help=f"audio models: seconds of new audio (default {AUDIO_SECONDS:g}); past "
                   f"the model's window of n_ctx samples decoding slides the window (docs/"
                   f"sampling.md)")
    p.add_argument("--num-samples", type=int, default=d.num_samples,
                   help=f"samples drawn together, 1 to {MAX_SAMPLES}")
    p.add_argument("--temperature", type=float, default=d.temperature,
                   help="divide the logits by this (> 0; 1.0 is the model's distribution)")
    p.add_argument("--top-k", type=int, help="keep only the k most likely bytes (>= 1)")
    p.add_argument("--top-p", type=float,
                   help="keep the most likely bytes whose probability reaches p, in (0, 1]")
    p.add_argument("--seed", type=int, help="make sampling reproducible (>= 0)")
    p.add_argument("--out", help="write to this file instead of stdout (image: a PNG, audio: "
                   "WAV files)")
    p.add_argument("--force", action="store_true", help="replace --out if it exists")
    p.add_argument("--device", default=d.device, help="auto, cpu, cuda or cuda:N")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--progress", action="store_true", help=argparse.SUPPRESS)  # the old default
    p.add_argument("--no-cache", action="store_true",
                   help="decode without the pattern-aware key/value cache (the whole window "
                   "through the model for every byte; same output, much slower)")
    p.add_argument("--crop-prompt", action="store_true",
                   help="take a prompt longer than the context: the model starts from its last "
                   "n_ctx - 1 bytes (the output still begins with the whole prompt)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    opts = SampleOptions(args.checkpoint, args.prompt, args.prompt_file, args.n_bytes,
                         args.seconds, args.num_samples, args.temperature, args.top_k,
                         args.top_p, args.seed, args.out, args.force, args.device,
                         not args.no_progress, not args.no_cache, args.crop_prompt)

    import numpy as np
    import torch

    from sparse_transformer.cli import require
    from sparse_transformer.codecs import check_new_files, sample_paths
    from sparse_transformer.data.registry import get_writer
    from sparse_transformer.sample.generate import generate
    from sparse_transformer.schema import check_data_meta
    from sparse_transformer.train.checkpoint import load_model
    from sparse_transformer.train.distributed import pick_device

    device = pick_device(opts.device)
    model, ckpt = load_model(opts.checkpoint, device)
    meta = ckpt.train.get("data") if isinstance(ckpt.train.get("data"), dict) else {}
    check_data_meta(meta, f"{ckpt.path / 'train.json'}: data")  # kind, shape, sample_rate
    kind = meta.get("kind", "text")
    writer = get_writer(kind)  # fail before sampling if this kind cannot be written
    require(f"sampling {kind}", *NEEDS.get(kind, ()))
    if opts.seconds is not None and kind != "audio":
        raise ValueError(f"--seconds is for audio models; this one samples {kind}")
    # ... and before sampling, refuse to replace a file (sampling can take minutes)
    check_new_files(sample_paths(kind, opts.out, opts.num_samples), opts.force)
    if opts.prompt_file:
        prompt = Path(opts.prompt_file).read_bytes()
    else:
        prompt = (opts.prompt or "").encode("utf-8")
    n_ctx = model.cfg.n_ctx
    n_new = opts.n_bytes
    if kind == "audio" and n_new is None:
        rate = meta.get("sample_rate", 12000)
        n_new = round((opts.seconds or AUDIO_SECONDS) * rate)
        check_memory(f"{opts.seconds or AUDIO_SECONDS:g} s of audio at {rate:,} Hz",
                     2 * 8 * opts.num_samples * n_new, hint="ask for fewer --seconds")
    if n_new is None:
        n_new = max(0, n_ctx - len(prompt)) if kind != "text" else 500
    if kind == "image" and len(prompt) + n_new != n_ctx:
        raise ValueError(f"an image is {n_ctx} bytes: the prompt ({len(prompt)} bytes) and "
                         f"--n-bytes must add up to it, got {n_new}")
    gen = torch.Generator().manual_seed(opts.seed) if opts.seed is not None else None
    tokens = torch.tensor(list(prompt), dtype=torch.long).repeat(opts.num_samples, 1)
    out = generate(model, tokens, n_new, temperature=opts.temperature, top_k=opts.top_k,
                   top_p=opts.top_p, generator=gen, progress=opts.progress, cache=opts.cache,
                   crop=opts.crop_prompt)
    samples = out.cpu().numpy().astype(np.uint8)
    written = writer(samples, opts.out, meta, force=opts.force)
    for path in written:
        print(f"wrote {path}", file=sys.stderr)
    return 0
