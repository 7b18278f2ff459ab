"""The paper's three experiments on one GPU: text, images and audio at their real lengths, dense
vs fixed vs strided attention at equal wall-clock (paper Table 2), test bits, samples.

A benchmark, not a test. Two halves:

    # on the GPU: train each variant for the same minutes, score the test split, sample
    python benchmarks/paper_gpu.py train text --minutes 4 --variants dense,strided --out OUT
    python benchmarks/paper_gpu.py train image --minutes 4 --variants strided --out OUT
    python benchmarks/paper_gpu.py train audio --minutes 4 --variants strided --out OUT

    # here, from what came back: PNG/WAV/spectrograms/text samples, baseline rows,
    # benchmarks/results/paper-gpu.json (rows merged by key) and docs/img/results-*.png
    python benchmarks/paper_gpu.py render OUT/text OUT/image OUT/audio

Every variant of a modality is the same model (the modality's preset) with only the attention
pattern changed, trained by ``sparse_transformer.train.train`` with the preset's recipe for
the same ``--minutes`` of wall-clock (evaluations included), then scored on the whole test
split with its best-validation checkpoint (``checkpoints/best``). ``train`` writes, as each
variant finishes (so a call stopped by its time limit keeps what finished):

    OUT/MODALITY/rows.json          one row per (variant, split, min_context)
    OUT/MODALITY/VARIANT.tar        the run's metrics.csv, run.json, summary.json and samples

Rows: {modality, data, preset, attention, backend, minutes, updates, tokens, split, bits, unit,
tokens_per_s, device, commit, min_context, ...}; ``render`` adds baseline rows (PPMd with the
train split as context, xz, bz2, zlib, PNG for images) with a ``baseline`` field instead of
``attention``, from the data set's meta.json (the same bytes).

``--set FIELD=VALUE`` changes the preset for every variant (smoke tests on a CPU use it to
shrink the model: ``--set n_layer=1 --set d_model=32 --set n_ctx=1024 --minutes 0.1``).
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# modality -> data set, preset, unit, and the attention variants (ModelConfig overrides)
MODALITIES: dict[str, dict[str, Any]] = {
    "text": {
        "data": "text100m", "preset": "text-gpu", "unit": "bits/byte",
        "variants": {
            "dense": {"attention": "causal", "embed_stride": 128},
            "fixed": {"attention": "fixed(stride=128, summary=32, distinct=4)"},
            "strided": {},  # the preset's strided(128, split)
            "gpt": None,  # the plain GPT of benchmarks/learning.py at the preset's size
        },
        "min_contexts": (1024, 4096, 8192),  # paper Table 3, for the preset's own variant
    },
    "image": {
        "data": "fashion-mnist", "preset": "fashion-mnist-gpu", "unit": "bits/dim",
        "variants": {
            "dense": {"attention": "causal"},
            "fixed": {"attention": "fixed(stride=28, summary=7, distinct=2)"},
            "strided": {},  # the preset's strided(28, split): one image row
        },
        "min_contexts": (),
    },
    "audio": {
        "data": "wesnoth-music", "preset": "audio-gpu", "unit": "bits/byte",
        "variants": {
            "dense": {"attention": "causal", "embed_stride": 256},
            "fixed": {"attention": "fixed(stride=256, summary=32, distinct=4)"},
            "strided": {},  # the preset's strided(256, split)
        },
        "min_contexts": (),
    },
}
MAIN_VARIANT = "strided"  # the presets' pattern: the one sampled at length and scored per context
RESULTS = ROOT / "benchmarks" / "results" / "paper-gpu.json"
IMG_DIR = ROOT / "docs" / "img" / "results"
TEXT_PROMPT = "<page>\n    <title>"


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _sets(items: list[str]) -> dict[str, Any]:
    from sparse_transformer.cli.train import parse_sets

    return parse_sets(items)


# -- the GPU half ------------------------------------------------------------------------------
def train_modality(args: argparse.Namespace) -> None:
    import torch

    from sparse_transformer import SparseTransformer
    from sparse_transformer.data.bytes import resolve_data
    from sparse_transformer.evaluate import evaluate_bpb
    from sparse_transformer.train import TrainConfig, train

    spec = MODALITIES[args.modality]
    out = Path(args.out) / args.modality
    out.mkdir(parents=True, exist_ok=True)
    rows_path = out / "rows.json"
    rows = json.loads(rows_path.read_text()) if rows_path.exists() else []
    device = "cuda" if torch.cuda.is_available() else "cpu"
    device_name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    data = resolve_data(spec["data"], args.data_root, prepare_missing=False)
    shared = _sets(args.set)
    variants = args.variants.split(",")
    unknown = [v for v in variants if v not in spec["variants"]]
    if unknown:
        raise SystemExit(f"unknown variant(s) {unknown}; choose from {list(spec['variants'])}")
    for variant in variants:
        if spec["variants"][variant] is None:
            rows += _train_reference_gpt(args, spec, data, device, device_name, shared)
            rows_path.write_text(json.dumps(rows, indent=1))
            continue
        run = Path(args.runs) / f"{args.modality}-{variant}"
        model_over = {**spec["variants"][variant], **shared}
        cfg = TrainConfig(data=spec["data"], data_root=args.data_root, preset=spec["preset"],
                          model=model_over, out=str(run), max_minutes=args.minutes,
                          progress=False, force=True, save_every=0, keep_last=1,
                          seed=args.seed, **_train_overrides(args))
        _warm_up(cfg, device)
        _log(f"{args.modality}/{variant}: training {args.minutes} min, preset {spec['preset']} "
             f"{model_over or ''}")
        t0 = time.time()
        summary = train(cfg)
        train_s = time.time() - t0
        model_cfg = summary["model"].cfg
        del summary["model"]
        _log(f"{args.modality}/{variant}: {summary['step']} updates in {train_s:.0f} s, "
             f"{summary['tokens_per_s']:,.0f} tokens/s, best valid {summary['best_valid_bpb']}"
             f" at {summary['best_step']}")
        torch.cuda.empty_cache() if device == "cuda" else None
        model = SparseTransformer.from_pretrained(run / "checkpoints" / "best", device=device)
        base = {"modality": args.modality, "data": spec["data"], "preset": spec["preset"],
                "variant": variant, "attention": model_cfg.attention,
                "backend": _backend(model_cfg, device), "minutes": args.minutes,
                "updates": summary["step"], "tokens": summary["step"] * cfg.batch_size
                * cfg.grad_accum * model_cfg.n_ctx, "tokens_per_s": summary["tokens_per_s"],
                "train_tokens_per_s": _median_rate(run / "metrics.csv"),
                "best_step": summary["best_step"], "best_valid_bpb": summary["best_valid_bpb"],
                "params": summary["params"], "unit": spec["unit"], "device": device_name,
                "commit": args.commit, "precision": cfg.precision, "eval_precision": "bf16"
                if device == "cuda" else "fp32"}
        record = data.record_size if data.kind == "image" else None
        contexts = (0,) + (spec["min_contexts"] if variant == MAIN_VARIANT else ())
        test = data.split("test")[:args.test_bytes or None]
        for m in contexts:
            if m >= model_cfg.n_ctx:
                continue
            t = time.time()
            res = evaluate_bpb(model, test, batch_size=args.eval_batch,
                               min_context=m, record_size=record,
                               precision=base["eval_precision"], device=device)
            rows.append({**base, "split": "test", "min_context": m,
                         "bits": round(res.bits_per_byte, 4), "scored": res.n_scored})
            _log(f"  test, min context {m}: {res.bits_per_byte:.4f} {spec['unit']} "
                 f"({time.time() - t:.0f} s)")
        if args.modality == "text":
            wiki = _wiki_part(data)[:args.test_bytes or None]
            res = evaluate_bpb(model, wiki, batch_size=args.eval_batch,
                               precision=base["eval_precision"], device=device) \
                if wiki.size >= model_cfg.n_ctx else None
            if res is not None:
                rows.append({**base, "data": "wiki", "split": "test", "min_context": 0,
                             "bits": round(res.bits_per_byte, 4), "scored": res.n_scored,
                             "note": "the wiki part of text100m's test split = wiki test"})
                _log(f"  wiki test: {res.bits_per_byte:.4f} bits/byte")
        rows_path.write_text(json.dumps(rows, indent=1))
        samples = _samples(args, model, data, variant) if args.samples else {}
        _pack(out / f"{variant}.tar", run, samples)
        del model
        torch.cuda.empty_cache() if device == "cuda" else None


def _train_reference_gpt(args, spec: dict, data, device: str, device_name: str,
                         shared: dict) -> list[dict]:
    """The plain GPT of benchmarks/learning.py (dense causal SDPA, learned absolute positions,
    N(0, 0.02) weights) at the preset's depth, width, heads and context, trained with the
    preset's recipe (rate, warm-up, decay, batch, bf16, clip 1) for the same minutes, the
    cosine following the clock; scored on test with its best-validation weights."""
    import copy
    import types

    import torch

    from sparse_transformer import ModelConfig
    from sparse_transformer.data.bytes import random_batch
    from sparse_transformer.evaluate import evaluate_bpb
    from sparse_transformer.precision import autocast
    from sparse_transformer.train.recipes import recipe
    from sparse_transformer.train.schedule import lr_at_time

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from learning import RefGPT, optimizer

    mcfg = ModelConfig.from_preset(spec["preset"], **shared)
    rec = {**recipe(spec["preset"]), **_train_overrides(args)}
    torch.manual_seed(args.seed)
    dev = torch.device(device)
    model = RefGPT(mcfg.n_layer, mcfg.d_model, mcfg.n_head, mcfg.n_ctx).to(dev)
    model.cfg = types.SimpleNamespace(n_ctx=mcfg.n_ctx)  # what evaluate_bpb reads
    opt = optimizer(model, rec["lr"], rec["weight_decay"], 0.999, fused=device == "cuda")
    gen = torch.Generator().manual_seed(args.seed)
    train, valid = data.split("train"), data.split("valid")[:rec["eval_bytes"] or None]
    budget, step, best, best_state, best_step = 60 * args.minutes, 0, math.inf, None, 0
    x = random_batch(train, mcfg.n_ctx, rec["batch_size"], gen).to(dev)
    with autocast(rec["precision"], dev):  # warm-up step: compilation outside the minutes
        torch.nn.functional.cross_entropy(model(x).float().flatten(0, 1), x.flatten()).backward()
    opt.zero_grad(set_to_none=True)
    _log(f"{args.modality}/gpt: training {args.minutes} min, {sum(p.numel() for p in model.parameters()):,} parameters")
    t0 = time.time()
    while (elapsed := time.time() - t0) < budget:
        lr = lr_at_time(step, elapsed / budget, lr=rec["lr"], warmup=rec["warmup"],
                        min_lr_ratio=rec["min_lr_ratio"])
        for g in opt.param_groups:
            g["lr"] = lr * g["lr_mult"]
        x = random_batch(train, mcfg.n_ctx, rec["batch_size"], gen).to(dev)
        with autocast(rec["precision"], dev):
            logits = model(x)
        torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), x.flatten()).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        step += 1
        if rec["eval_every"] and step % rec["eval_every"] == 0:
            bpb = evaluate_bpb(model, valid, batch_size=args.eval_batch,
                               precision=rec["precision"], device=dev).bits_per_byte
            if bpb < best:
                best, best_step, best_state = bpb, step, copy.deepcopy(model.state_dict())
    train_s = time.time() - t0
    bpb = evaluate_bpb(model, valid, batch_size=args.eval_batch, precision=rec["precision"],
                       device=dev).bits_per_byte
    if bpb < best or best_state is None:
        best, best_step = bpb, step
    else:
        model.load_state_dict(best_state)
    tokens = step * rec["batch_size"] * mcfg.n_ctx
    _log(f"{args.modality}/gpt: {step} updates in {train_s:.0f} s, {tokens / train_s:,.0f} "
         f"tokens/s, best valid {best} at {best_step}")
    base = {"modality": args.modality, "data": spec["data"], "preset": spec["preset"],
            "variant": "gpt", "attention": "plain GPT (dense causal, absolute positions)",
            "backend": "sdpa" if device == "cuda" else "sdpa (cpu)", "minutes": args.minutes,
            "updates": step, "tokens": tokens, "tokens_per_s": tokens / train_s,
            "best_step": best_step, "best_valid_bpb": best,
            "params": sum(p.numel() for p in model.parameters()), "unit": spec["unit"],
            "device": device_name, "commit": args.commit, "precision": rec["precision"],
            "eval_precision": "bf16" if device == "cuda" else "fp32"}
    out = []
    for name, stream in (("text100m", data.split("test")), ("wiki", _wiki_part(data))):
        stream = stream[:args.test_bytes or None]
        res = evaluate_bpb(model, stream, batch_size=args.eval_batch,
                           precision=base["eval_precision"], device=dev)
        out.append({**base, "data": name, "split": "test", "min_context": 0,
                    "bits": round(res.bits_per_byte, 4), "scored": res.n_scored})
        _log(f"  {name} test: {res.bits_per_byte:.4f} bits/byte")
    del model, opt
    return out


def _warm_up(cfg, device: str) -> None:
    """One forward and backward of a throwaway model at the run's shapes, so that kernel
    compilation (Triton's JIT, cuDNN's plans) is not charged to the variant's minutes."""
    import torch

    from sparse_transformer import ModelConfig, SparseTransformer
    from sparse_transformer.model.transformer import loss_nats
    from sparse_transformer.precision import autocast

    t = time.time()
    mcfg = ModelConfig.from_preset(cfg.preset, **cfg.model)
    model = SparseTransformer(mcfg).to(device)
    x = torch.randint(0, 256, (cfg.batch_size, mcfg.n_ctx), device=device)
    with autocast(cfg.precision, torch.device(device)):
        logits = model(x)
    loss_nats(logits, x).backward()
    del model, logits
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
    _log(f"  warm-up (kernel compilation) {time.time() - t:.0f} s, outside the minutes")


def _train_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """TrainConfig fields from --train FIELD=VALUE (the recipe's otherwise)."""
    return _sets(args.train)


def _backend(cfg, device: str) -> str:
    """The backend that ran: "auto" sends causal attention to SDPA on CUDA, the rest to our
    Triton op (kernels/dispatch.py)."""
    if cfg.backend != "auto":
        return cfg.backend
    if device != "cuda":
        return "auto (cpu)"
    return "sdpa" if cfg.attention.startswith("causal") else "triton"


def _median_rate(metrics_csv: Path) -> float | None:
    """Median tokens/s of the metric rows (training only: evaluations are left out)."""
    from sparse_transformer.train.metrics import read_metrics

    rates = [float(r["tokens_per_s"]) for r in read_metrics(metrics_csv) if r.get("tokens_per_s")]
    return float(np.median(rates)) if rates else None


def _wiki_part(data) -> np.ndarray:
    from sparse_transformer.data.text100m import part

    return part(data, "wiki", "test")


def _samples(args, model, data, variant: str) -> dict[str, bytes]:
    """What a person judges: text 2,000 bytes; 64 images; audio clips (seconds at 12 kHz)."""
    import torch

    from sparse_transformer.sample.generate import generate

    gen = torch.Generator().manual_seed(args.seed)
    files: dict[str, bytes] = {}
    t = time.time()
    if args.modality == "text":
        n = args.text_bytes
        files["unconditional.txt"] = bytes(generate(model, b"", n, generator=gen))
        files["prompted.txt"] = bytes(generate(model, TEXT_PROMPT.encode(), n, generator=gen))
        what = f"2 x {n} bytes"
    elif args.modality == "image":
        n_ctx = model.cfg.n_ctx
        empty = torch.zeros(args.images, 0, dtype=torch.long)
        imgs = generate(model, empty, n_ctx, generator=gen).cpu().numpy().astype(np.uint8)
        files["samples.npy"] = _npy(imgs)
        what = f"{args.images} images"
    else:
        if variant != MAIN_VARIANT:
            return files
        rate = int(data.meta.get("sample_rate", 12000))
        n_new = int(args.seconds * rate)
        empty = torch.zeros(args.clips, 0, dtype=torch.long)
        clips = generate(model, empty, n_new, generator=gen).cpu().numpy().astype(np.uint8)
        files["unconditional.npy"] = _npy(clips)
        prompt = _loud_clip(np.asarray(data.split("test")), int(args.prompt_seconds * rate))
        room = model.cfg.n_ctx - 1 - prompt.size  # stay inside one context: no sliding
        cont = generate(model, torch.from_numpy(prompt.astype(np.int64)), room, generator=gen)
        files["continuation.npy"] = _npy(cont.cpu().numpy().astype(np.uint8))
        files["continuation_prompt_samples.txt"] = str(prompt.size).encode()
        what = f"{args.clips} x {args.seconds} s + a continuation of {room / rate:.1f} s"
    _log(f"  samples: {what} in {time.time() - t:.0f} s")
    return files


def _loud_clip(stream: np.ndarray, n: int) -> np.ndarray:
    """The n-sample window of ``stream`` (mu-law bytes) with the most energy among 64 evenly
    spaced candidates: a continuation should start from music, not from a track's silence."""
    from sparse_transformer.codecs import mu_law_decode

    starts = np.linspace(0, stream.size - n, 64).astype(int)
    energy = [float(np.mean(mu_law_decode(stream[s:s + n]) ** 2)) for s in starts]
    s = int(starts[int(np.argmax(energy))])
    return stream[s:s + n]


def _npy(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


def _pack(path: Path, run: Path, samples: dict[str, bytes]) -> None:
    """One tar per variant (the device returns at most 8 files)."""
    with tarfile.open(path, "w") as tar:
        for name in ("metrics.csv", "run.json", "summary.json"):
            if (run / name).exists():
                tar.add(run / name, arcname=name)
        for name, blob in samples.items():
            info = tarfile.TarInfo(f"samples/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))


# -- the CPU half: what came back -> results, pictures, sounds ---------------------------------
def render(args: argparse.Namespace) -> None:
    from sparse_transformer.data.bytes import resolve_data

    results_path, img_dir = Path(args.results), Path(args.img_dir)
    results = json.loads(results_path.read_text()) if results_path.exists() else []
    img_dir.mkdir(parents=True, exist_ok=True)
    for folder in map(Path, args.folders):
        modality = folder.name
        spec = MODALITIES[modality]
        rows = json.loads((folder / "rows.json").read_text())
        data = resolve_data(spec["data"], args.data_root, prepare_missing=False)
        device = rows[0]["device"] if rows else "?"
        for split, found in (data.meta.get("baselines") or {}).items():
            if split != "test":
                continue
            for name, bits in found.items():
                rows.append({"modality": modality, "data": spec["data"], "baseline": name,
                             "split": split, "bits": bits, "unit": spec["unit"],
                             "min_context": 0, "device": "cpu (same bytes)"})
        if modality == "text":
            rows += _wiki_baselines(args.data_root)
        results = _merge(results, rows)
        for tar_path in sorted(folder.glob("*.tar")):
            variant = tar_path.stem
            with tarfile.open(tar_path) as tar:
                tar.extractall(folder / variant, filter="data")
            _render_samples(modality, variant, folder / variant / "samples", data, img_dir,
                            device)
            _render_curve(folder / variant / "metrics.csv", img_dir, modality, variant)
    results_path.write_text(json.dumps(results, indent=1) + "\n")
    _log(f"{len(results)} rows in {results_path}")


def _wiki_baselines(data_root: str) -> list[dict]:
    from sparse_transformer.data.bytes import resolve_data

    try:
        wiki = resolve_data("wiki", data_root, prepare_missing=False)
    except FileNotFoundError:
        return []
    found = (wiki.meta.get("baselines") or {}).get("test", {})
    return [{"modality": "text", "data": "wiki", "baseline": k, "split": "test", "bits": v,
             "unit": "bits/byte", "min_context": 0, "device": "cpu (same bytes)"}
            for k, v in found.items()]


def _merge(old: list[dict], new: list[dict]) -> list[dict]:
    """Rows keyed by what they measure and the commit that measured it: a new measurement
    replaces one of the same commit (a rerun, or a baseline, which has none), and rows of
    other commits stay, so results/paper-gpu.json keeps the runs the docs cite from earlier
    code (the eager fixed run of 29d0af7 beside the graphed one of 2b2b91c)."""
    def key(r: dict) -> tuple:
        return (r["modality"], r["data"], r.get("attention") or r.get("baseline"), r["split"],
                r.get("min_context", 0), r.get("minutes"), r.get("commit"))

    merged = {key(r): r for r in old}
    merged.update({key(r): r for r in new})
    return list(merged.values())


def _render_samples(modality: str, variant: str, folder: Path, data, img_dir: Path,
                    device: str) -> None:
    if not folder.is_dir():
        return
    if modality == "image":
        samples = np.load(folder / "samples.npy")
        _image_figure(samples, data, img_dir / f"image-{variant}.png",
                      f"{len(samples)} samples, fashion-mnist-gpu, {variant} attention "
                      f"({device})")
    elif modality == "audio" and (folder / "unconditional.npy").exists():
        from sparse_transformer.codecs import mu_law_decode, write_mu_law_wav

        rate = int(data.meta.get("sample_rate", 12000))
        clips = np.load(folder / "unconditional.npy")
        cont = np.load(folder / "continuation.npy").reshape(-1)
        given = int((folder / "continuation_prompt_samples.txt").read_text())
        for k, clip in enumerate(clips):
            write_mu_law_wav(img_dir / f"audio-{variant}-{k}.wav", clip, rate)
        write_mu_law_wav(img_dir / f"audio-{variant}-continuation.wav", cont, rate)
        _spectrograms([mu_law_decode(x) for x in (*clips, cont)], rate, given,
                      img_dir / f"audio-{variant}.png", device)
    elif modality == "text":
        for name in ("unconditional.txt", "prompted.txt"):
            if (folder / name).exists():
                (img_dir / f"text-{variant}-{name}").write_bytes((folder / name).read_bytes())


def _image_figure(samples: np.ndarray, data, path: Path, title: str) -> None:
    """Samples beside as many real test images, each panel labelled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sparse_transformer.codecs import image_grid, unflatten_images

    shape = tuple(data.meta["shape"])
    n = samples.shape[0]
    real = unflatten_images(np.asarray(data.split("test")[: n * samples.shape[1]]), shape)
    fig, axes = plt.subplots(1, 2, figsize=(10, 5.4))
    for ax, imgs, label in ((axes[0], unflatten_images(samples, shape), title),
                            (axes[1], real, f"{n} real test images (the first {n})")):
        grid = image_grid(imgs, ncols=8)
        ax.imshow(grid[..., 0], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        ax.set_title(label, fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _spectrograms(signals: list[np.ndarray], rate: int, given: int, path: Path,
                  device: str) -> None:
    """One spectrogram per clip (float signals in [-1, 1]; the last is the continuation, of
    which the first ``given`` samples are the real prompt), on one dB scale with its colour
    bar, so the panels compare."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.mlab as mlab
    import matplotlib.pyplot as plt

    nfft, overlap = 512, 384
    top = max(float(np.max(mlab.specgram(x, NFFT=nfft, Fs=rate, noverlap=overlap)[0]))
              for x in signals)
    vmax = 10 * np.log10(max(top, 1e-20))
    fig, axes = plt.subplots(len(signals), 1, figsize=(9.5, 1.8 * len(signals)), sharex=True,
                             layout="constrained")
    for k, (ax, x) in enumerate(zip(np.atleast_1d(axes), signals)):
        *_, im = ax.specgram(x, NFFT=nfft, Fs=rate, noverlap=overlap, cmap="magma",
                             vmin=vmax - 90, vmax=vmax)
        last = k == len(signals) - 1
        ax.set_title(f"continuation: {given / rate:.1f} s of a real test clip, then sampled"
                     if last else f"unconditional sample {k + 1}", fontsize=8)
        if last:
            ax.axvline(given / rate, color="cyan", lw=1)
        ax.set_ylabel("Hz", fontsize=7)
    np.atleast_1d(axes)[-1].set_xlabel("seconds")
    fig.colorbar(im, ax=axes, label="power (dB, the loudest bin of all panels at the top)",
                 shrink=0.9)
    fig.suptitle(f"audio-gpu (strided 256, 65,536 samples of context), 12 kHz mu-law; {device}",
                 fontsize=9)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def spectrogram(args: argparse.Namespace) -> None:
    """The spectrogram picture again from the WAVs ``render`` wrote (PREFIX-K.wav and
    PREFIX-continuation.wav): 16-bit PCM, read with the standard library."""
    import wave

    prefix = Path(args.prefix)
    paths = sorted(prefix.parent.glob(f"{prefix.name}-[0-9]*.wav"))
    paths.append(prefix.parent / f"{prefix.name}-continuation.wav")
    signals, rate = [], 12000
    for p in paths:
        with wave.open(str(p)) as w:
            rate = w.getframerate()
            pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
        signals.append(pcm.astype(np.float32) / 32768)
    _spectrograms(signals, rate, int(args.given_seconds * rate), prefix.with_suffix(".png"),
                  args.device)
    _log(f"{prefix.with_suffix('.png')} from {len(paths)} WAVs")


def _render_curve(metrics_csv: Path, img_dir: Path, modality: str, variant: str) -> None:
    if not metrics_csv.exists():
        return
    from sparse_transformer.train.metrics import read_metrics

    rows = read_metrics(metrics_csv)
    (img_dir / f"{modality}-{variant}-valid.json").write_text(json.dumps(
        [{"step": int(r["step"]), "elapsed_s": float(r["elapsed_s"]),
          "valid_bpb": float(r["valid_bpb"])} for r in rows if r.get("valid_bpb")]))


def plot_table2(args: argparse.Namespace) -> None:
    """Validation against wall-clock, one panel per modality, from the rendered curves."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    img_dir = Path(args.img_dir)
    mods = [m for m in MODALITIES if list(img_dir.glob(f"{m}-*-valid.json"))]
    if not mods:
        return
    fig, axes = plt.subplots(1, len(mods), figsize=(5 * len(mods), 3.8), squeeze=False)
    for ax, m in zip(axes[0], mods):
        for f in sorted(img_dir.glob(f"{m}-*-valid.json")):
            pts = json.loads(f.read_text())
            variant = f.name[len(m) + 1:-len("-valid.json")]
            ax.plot([p["elapsed_s"] / 60 for p in pts], [p["valid_bpb"] for p in pts], "o-",
                    ms=3, label=variant)
        ax.set_xlabel("minutes of training (wall-clock)")
        ax.set_ylabel(MODALITIES[m]["unit"] + " (validation)")
        ax.set_title(f"{m}: {MODALITIES[m]['preset']} on {MODALITIES[m]['data']}", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(img_dir / "table2-curves.png", dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="on the GPU: train, score and sample each variant")
    t.add_argument("modality", choices=sorted(MODALITIES))
    t.add_argument("--minutes", type=float, default=4.0, help="wall-clock per variant")
    t.add_argument("--variants", default="dense,fixed,strided")
    t.add_argument("--out", default=os.environ.get("OUT", "out/paper-gpu"))
    t.add_argument("--runs", default="runs/paper-gpu", help="where the run directories go")
    t.add_argument("--data-root", default="data")
    t.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE")
    t.add_argument("--train", action="append", default=[], metavar="FIELD=VALUE",
                   help="a TrainConfig field instead of the recipe's, e.g. lr=5e-4")
    t.add_argument("--test-bytes", type=int, default=0, help="score this many test bytes "
                   "(0: the whole split; smoke tests only)")
    t.add_argument("--seed", type=int, default=1337)
    t.add_argument("--eval-batch", type=int, default=16)
    t.add_argument("--no-samples", dest="samples", action="store_false")
    t.add_argument("--text-bytes", type=int, default=2000)
    t.add_argument("--images", type=int, default=64)
    t.add_argument("--clips", type=int, default=4)
    t.add_argument("--seconds", type=float, default=5.0)
    t.add_argument("--prompt-seconds", type=float, default=2.0)
    t.add_argument("--commit", default=os.environ.get("COMMIT", "unknown"))
    r = sub.add_parser("render", help="here: results JSON, pictures and sounds from OUT")
    r.add_argument("folders", nargs="+", help="OUT/text, OUT/image, OUT/audio")
    r.add_argument("--data-root", default="data")
    r.add_argument("--results", default=str(RESULTS), help="the JSON the rows are merged into")
    r.add_argument("--img-dir", default=str(IMG_DIR), help="pictures, sounds, text samples")
    g = sub.add_parser("spectrogram", help="here: the audio picture again from its WAVs")
    g.add_argument("prefix", help="e.g. docs/img/results/audio-strided (PREFIX-K.wav, "
                   "PREFIX-continuation.wav -> PREFIX.png)")
    g.add_argument("--given-seconds", type=float, default=2.0,
                   help="seconds of real prompt at the start of the continuation")
    g.add_argument("--device", default="NVIDIA H100 80GB HBM3", help="the GPU that sampled")
    args = ap.parse_args(argv)
    if args.cmd == "train":
        train_modality(args)
    elif args.cmd == "spectrogram":
        spectrogram(args)
    else:
        render(args)
        plot_table2(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
