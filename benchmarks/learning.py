"""Learning benchmark: does our SparseTransformer learn as fast as a plain GPT on the same bytes?

A benchmark, not a test. It trains several *variants* on the same byte stream with the same
batches (one seeded generator per variant, identical draws), the same optimizer (AdamW, linear
warm-up, cosine decay over the steps, clip 1.0, decay on matrices only) and the same number
of updates, and records validation bits per byte against updates and tokens.

Variants (``--variant`` takes ``NAME MODEL [key=value ...]``):

* ``ref``: a minimal pre-LN GPT written here (learned absolute positions, dense causal
  ``scaled_dot_product_attention``, exact GELU, every weight N(0, 0.02), residual projections
  N(0, 0.02 / sqrt(2 L)), untied output). Its inputs are shifted like ours (a learned start
  vector predicts byte 0), so both score exactly the same bytes.
* ``ours``: ``sparse_transformer.SparseTransformer`` built from a preset and ``set.FIELD=...``
  overrides of its ModelConfig; ablation knobs that are not config fields are listed in
  ``INTERVENTIONS`` (re-initialise the output matrix, exact gelu, no depth scaling, ...).

Optimizer/run keys for either model: ``lr``, ``warmup``, ``wd``, ``beta2``, ``batch``,
``precision`` (fp32 | bf16), ``dropout`` (ref only; ours uses ``set.dropout``).

    python benchmarks/learning.py --study cpu-cause --out benchmarks/results/learning-cpu
    python benchmarks/learning.py --variant ref ref --variant ours ours set.init=std \\
        --preset wiki-small --steps 400 --out /tmp/l
    python benchmarks/learning.py --plot benchmarks/results/learning-cpu.json

Writes ``OUT.json`` (every curve, every setting, the machine) after each variant, so a run
stopped by its time budget keeps what finished, and ``OUT.png``.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo, uninstalled

from sparse_transformer.data.bytes import resolve_data  # noqa: E402
from sparse_transformer.model.config import ModelConfig  # noqa: E402
from sparse_transformer.model.transformer import SparseTransformer  # noqa: E402

LN2 = math.log(2.0)


# -- the reference decoder -------------------------------------------------------------------
class RefBlock(nn.Module):
    def __init__(self, d: int, n_head: int, dropout: float):
        super().__init__()
        self.n_head = n_head
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.fc1, self.fc2 = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(b, n, 3, self.n_head, -1).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.drop(self.proj(y.transpose(1, 2).reshape(b, n, d)))
        return x + self.drop(self.fc2(F.gelu(self.fc1(self.ln2(x)))))


class RefGPT(nn.Module):
    """Minimal pre-LN GPT over bytes; logits[:, i] predict x[:, i] (start vector at 0)."""

    def __init__(self, n_layer: int, d: int, n_head: int, n_ctx: int, dropout: float = 0.0):
        super().__init__()
        self.tok = nn.Embedding(256, d)
        self.pos = nn.Embedding(n_ctx, d)
        self.start = nn.Parameter(torch.zeros(d))
        self.blocks = nn.ModuleList(RefBlock(d, n_head, dropout) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(d)
        self.head = nn.Linear(d, 256, bias=False)
        for name, p in self.named_parameters():
            if name.endswith("bias"):
                nn.init.zeros_(p)
            elif p.dim() >= 2 or name == "start":
                std = 0.02 / math.sqrt(2 * n_layer) if name.endswith(("proj.weight",
                                                                       "fc2.weight")) else 0.02
                nn.init.normal_(p, std=std)
        for ln in [self.ln_f] + [m for b in self.blocks for m in (b.ln1, b.ln2)]:
            nn.init.ones_(ln.weight)
            nn.init.zeros_(ln.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n = x.shape
        h = torch.cat([self.start.expand(b, 1, -1), self.tok(x[:, :-1])], 1)
        h = h + self.pos(torch.arange(n, device=x.device))
        for block in self.blocks:
            h = block(h)
        return self.head(self.ln_f(h))


# -- ablation knobs for our model -------------------------------------------------------------
def _reinit_head(model: SparseTransformer, value: str) -> None:
    nn.init.normal_(model.head.weight, std=float(value))


def _exact_gelu(model: SparseTransformer, value: str) -> None:
    if value == "exact":
        for block in model.blocks:
            ff = block.ff
            ff.forward = lambda x, ff=ff: ff.w2(F.gelu(ff.w1(x)))


def _no_depth_scale(model: SparseTransformer, value: str) -> None:
    """Undo the 1/sqrt(2N) on W_2 and W_p (re-draw them at the plain std)."""
    if value in ("0", "false", "off"):
        from sparse_transformer.model.embeddings import paper_std

        for block in model.blocks:
            for lin in (block.attn.proj, block.ff.w2):
                nn.init.normal_(lin.weight, std=paper_std(lin.in_features, model.cfg.init))


def _all_std(model: SparseTransformer, value: str) -> None:
    """Every matrix (and the start vector) N(0, value), residual outputs / sqrt(2N): GPT-2's."""
    std = float(value)
    depth = 1.0 / math.sqrt(2 * model.cfg.n_layer)
    for name, p in model.named_parameters():
        if name == "head.weight":
            continue  # its own knob (head_std)
        if p.dim() >= 2 or name.endswith("start"):
            scale = depth if name.endswith(("proj.weight", "w2.weight")) else 1.0
            nn.init.normal_(p, std=std * scale)


def _absolute_positions(model: SparseTransformer, value: str) -> None:
    """Replace the factorized (row, column) tables by one learned table of n_ctx rows."""
    if value != "absolute":
        return
    emb = model.embed
    table = nn.Embedding(model.cfg.n_ctx, model.cfg.d_model)
    nn.init.normal_(table.weight, std=float(emb.pos[0].weight.std()))
    emb.pos = nn.ModuleList([table])
    # position i reads row i of the one table (the model's forward states ask the embedding)
    emb.coordinates = lambda n, device=None: [torch.arange(n, device=device)]


UNIGRAM: dict[str, torch.Tensor] = {}  # log frequencies of the train bytes (set in main)


def _head_bias(model: SparseTransformer, value: str) -> None:
    """Give the zero-initialised output matrix a bias: zero ("1") or the train bytes' log
    unigram frequencies ("unigram"), so the first logits are the unigram model already."""
    if value in ("1", "true", "on", "unigram"):
        head = nn.Linear(model.cfg.d_model, model.cfg.vocab_size, bias=True)
        nn.init.zeros_(head.weight)
        nn.init.zeros_(head.bias)
        if value == "unigram":
            head.bias.copy_(UNIGRAM["log_freq"])
        model.head = head


INTERVENTIONS: dict[str, Callable[[SparseTransformer, str], None]] = {
    "head_bias": _head_bias,
    "head_std": _reinit_head,
    "gelu": _exact_gelu,
    "depth_scale": _no_depth_scale,
    "all_std": _all_std,
    "pos": _absolute_positions,
}
RUN_KEYS = {"lr": float, "warmup": int, "wd": float, "beta2": float, "batch": int,
            "precision": str, "dropout": float, "min_lr": float, "head_lr": float}


@dataclass
class Variant:
    name: str
    model: str  # "ours" | "ref"
    settings: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, words: list[str]) -> "Variant":
        if len(words) < 2 or words[1] not in ("ours", "ref"):
            raise SystemExit(f"--variant NAME ours|ref [key=value ...], got {words}")
        settings = {}
        for w in words[2:]:
            if "=" not in w:
                raise SystemExit(f"--variant {words[0]}: expected key=value, got {w!r}")
            k, v = w.split("=", 1)
            if not (k in RUN_KEYS or k in INTERVENTIONS or k.startswith("set.")):
                raise SystemExit(f"--variant {words[0]}: unknown key {k!r}")
            settings[k] = v
        return cls(words[0], words[1], settings)


# -- studies: the ablations behind docs/training.md ---------------------------------------
STUDIES: dict[str, list[list[str]]] = {
    # CPU, small shapes: one change at a time against our model as shipped.
    "cpu-cause": [
        ["ref", "ref"],
        ["ours", "ours"],
        ["ours head N(0,0.02)", "ours", "head_std=0.02"],
        ["ours init=std", "ours", "set.init=std"],
        ["ours all N(0,0.02)", "ours", "all_std=0.02"],
        ["ours no depth scale", "ours", "depth_scale=0"],
        ["ours exact gelu", "ours", "gelu=exact"],
        ["ours absolute pos", "ours", "pos=absolute"],
        ["ours causal attn", "ours", "set.attention=causal"],
        ["ours wd=0", "ours", "wd=0"],
        ["ref wd=0", "ref", "wd=0"],
    ],
    # H200, 12 layers d 512 (preset wiki-gpu, dropout 0): the cause at GPU scale, and the fix.
    "gpu-cause": [
        ["ref", "ref"],
        ["ours", "ours"],
        ["ours head N(0,0.02)", "ours", "head_std=0.02"],
        ["ours head lr x10", "ours", "head_lr=10"],
        ["ours head lr x30", "ours", "head_lr=30"],
        ["ref lr 5e-4", "ref", "lr=5e-4"],
        ["ours head lr x10, lr 5e-4", "ours", "head_lr=10", "lr=5e-4"],
    ],
    # H200, the enwik8 preset (30 layers, n_ctx 12,288, dropout 0 here).
    "gpu-enwik8": [
        ["ref", "ref"],
        ["ours", "ours"],
        ["ours head lr x10", "ours", "head_lr=10"],
    ],
    # H200, 12 layers d 512: zero-started output matrix with a unigram bias and/or a larger
    # output learning rate (the fixes that keep the paper's zero init).
    "gpu-fix": [
        ["ours unigram bias, head lr x10", "ours", "head_bias=unigram", "head_lr=10"],
        ["ours unigram bias, head lr x30", "ours", "head_bias=unigram", "head_lr=30"],
        ["ours head lr x100", "ours", "head_lr=100"],
    ],
    "gpu-enwik8-fix": [
        ["ours unigram bias, head lr x30", "ours", "head_bias=unigram", "head_lr=30"],
        ["ours head lr x30", "ours", "head_lr=30"],
        ["ours head N(0,0.02)", "ours", "head_std=0.02"],
    ],
    # CPU, small shapes: with the fix (unigram output bias, output rate x10), one change at a
    # time, against the reference and our model as it was.
    "cpu-ablation": [
        ["ref", "ref"],
        ["ours before the fix", "ours", "set.output_bias=false"],
        ["ours (fix: unigram bias, head lr x10)", "ours", "head_bias=unigram", "head_lr=10"],
        ["fix + init=std", "ours", "head_bias=unigram", "head_lr=10", "set.init=std"],
        ["fix + no depth scale", "ours", "head_bias=unigram", "head_lr=10", "depth_scale=0"],
        ["fix + exact gelu", "ours", "head_bias=unigram", "head_lr=10", "gelu=exact"],
        ["fix + absolute positions", "ours", "head_bias=unigram", "head_lr=10",
         "pos=absolute"],
        ["fix + causal attention", "ours", "head_bias=unigram", "head_lr=10",
         "set.attention=causal", "set.embed_stride=16"],
        ["fix + weight decay 0", "ours", "head_bias=unigram", "head_lr=10", "wd=0"],
        ["fix + lr 1e-3", "ours", "head_bias=unigram", "head_lr=10", "lr=1e-3"],
        ["fix + warmup 200", "ours", "head_bias=unigram", "head_lr=10", "warmup=200"],
        ["fix, head N(0,0.02) instead of 0", "ours", "head_bias=unigram", "head_lr=10",
         "head_std=0.02"],
    ],
    # The paper's Table 2 at small scale: dense vs fixed vs strided, same model and updates
    # (presets as shipped: unigram output bias; output rate x10 as in their recipes).
    "cpu-table2-wiki": [
        ["dense (causal)", "ours", "set.attention=causal", "set.embed_stride=16", "head_lr=10"],
        ["fixed(16, 4, 2)", "ours", "head_lr=10"],
        ["strided(16, split)", "ours", "set.attention=strided(stride=16, mode='split')",
         "head_lr=10"],
    ],
    "cpu-table2-fashion-mnist": [
        ["dense (causal)", "ours", "set.attention=causal", "head_lr=10"],
        ["fixed(28, 7, 2)", "ours", "set.attention=fixed(stride=28, summary=7, distinct=2)",
         "head_lr=10"],
        ["strided(28, split)", "ours", "head_lr=10"],
    ],
    # CPU: what the zero-initialised output needs (the paper's init kept).
    "cpu-zero-head": [
        ["ours", "ours"],
        ["ours warmup 200", "ours", "warmup=200"],
        ["ours beta2 0.95", "ours", "beta2=0.95"],
        ["ours head lr x0.1", "ours", "head_lr=0.1"],
        ["ours head lr x0.03", "ours", "head_lr=0.03"],
        ["ours lr 1e-3", "ours", "lr=1e-3"],
        ["ref lr 1e-3", "ref", "lr=1e-3"],
    ],
}


# -- training ----------------------------------------------------------------------------------
def build(variant: Variant, preset: str, overrides: dict[str, Any], device: torch.device
          ) -> tuple[nn.Module, int]:
    s = variant.settings
    cfg_over = dict(overrides)
    for k, v in s.items():
        if k.startswith("set."):
            cfg_over[k[4:]] = _literal(v)
    cfg = ModelConfig.from_preset(preset, **cfg_over)
    torch.manual_seed(0)
    if variant.model == "ref":
        model = RefGPT(cfg.n_layer, cfg.d_model, cfg.n_head, cfg.n_ctx,
                       float(s.get("dropout", cfg.dropout)))
    else:
        model = SparseTransformer(cfg)
        with torch.no_grad():
            if cfg.output_bias:  # as train() does for a new run
                model.init_output_bias(UNIGRAM["log_freq"])
            for k, fn in INTERVENTIONS.items():
                if k in s:
                    fn(model, s[k])
    return model.to(device), cfg.n_ctx


def _literal(v: str) -> Any:
    for cast in (int, float):
        try:
            return cast(v)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(v.lower(), v)


def optimizer(model: nn.Module, lr: float, wd: float, beta2: float, fused: bool,
              head_lr: float = 1.0):
    """AdamW, decay on matrices only; ``head_lr`` multiplies the output matrix's rate."""
    named = list(model.named_parameters())
    head = [p for n, p in named if n.startswith("head.")]
    decay = [p for n, p in named if p.dim() >= 2 and not n.startswith("head.")]
    rest = [p for n, p in named if p.dim() < 2 and not n.startswith("head.")]
    kw = {"fused": True} if fused else {}
    groups = [{"params": decay, "weight_decay": wd, "lr_mult": 1.0},
              {"params": rest, "weight_decay": 0.0, "lr_mult": 1.0},
              {"params": head, "weight_decay": wd, "lr_mult": head_lr}]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, beta2), **kw)


def lr_at(step: int, lr: float, warmup: int, total: int, min_ratio: float) -> float:
    if step < warmup:
        return lr * (step + 1) / warmup
    t = min(1.0, (step - warmup) / max(1, total - warmup))
    return lr * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * t)))


@torch.no_grad()
def evaluate(model: nn.Module, windows: torch.Tensor, batch: int, precision: str,
             device: torch.device) -> float:
    model.eval()
    total = 0.0
    for i in range(0, windows.shape[0], batch):
        x = windows[i:i + batch].to(device)
        with _autocast(precision, device):
            logits = model(x)
        total += float(F.cross_entropy(logits.float().flatten(0, 1), x.flatten(),
                                       reduction="sum"))
    model.train()
    return total / windows.numel() / LN2


def _autocast(precision: str, device: torch.device):
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    import contextlib

    return contextlib.nullcontext()


def train_variant(variant: Variant, args, train: np.ndarray, valid_windows: torch.Tensor,
                  device: torch.device, log: Callable[[str], None]) -> dict[str, Any]:
    s = variant.settings
    lr = float(s.get("lr", args.lr))
    warmup = int(s.get("warmup", args.warmup))
    wd = float(s.get("wd", args.wd))
    beta2 = float(s.get("beta2", args.beta2))
    batch = int(s.get("batch", args.batch))
    precision = s.get("precision", args.precision)
    min_lr = float(s.get("min_lr", 0.0))
    model, n_ctx = build(variant, args.preset, args.overrides, device)
    opt = optimizer(model, lr, wd, beta2, fused=device.type == "cuda",
                    head_lr=float(s.get("head_lr", 1.0)))
    gen = torch.Generator().manual_seed(args.seed)  # the same batches for every variant
    curve: list[dict[str, float]] = []
    tokens = 0
    first_step_s = 0.0
    t_train = 0.0
    params = sum(p.numel() for p in model.parameters())
    log(f"{variant.name}: {params / 1e6:.2f}M params, lr {lr:g}, warmup {warmup}, wd {wd:g}, "
        f"batch {batch}x{n_ctx}, {precision}")
    for step in range(args.steps + 1):
        if step % args.eval_every == 0 or step == args.steps:
            bpb = evaluate(model, valid_windows, args.eval_batch, precision, device)
            curve.append({"step": step, "tokens": tokens, "valid_bpb": bpb,
                          "train_s": round(t_train, 3)})
            log(f"  {variant.name} step {step:5d} valid {bpb:.4f} bits/byte "
                f"({t_train:.0f} s training)")
            if not math.isfinite(bpb):
                break
        if step == args.steps or (args.minutes and t_train > 60 * args.minutes):
            break
        t0 = time.perf_counter()
        if args.record:  # images: windows start on an image boundary (row/col embedding)
            starts = torch.randint(0, train.size // args.record, (batch,), generator=gen)
            starts = starts * args.record
        else:
            starts = torch.randint(0, train.size - n_ctx, (batch,), generator=gen)
        x = torch.from_numpy(np.stack([train[i:i + n_ctx] for i in starts.tolist()])
                             .astype(np.int64)).to(device, non_blocking=True)
        for g in opt.param_groups:
            g["lr"] = lr_at(step, lr, warmup, args.steps, min_lr) * g["lr_mult"]
        with _autocast(precision, device):
            logits = model(x)
        loss = F.cross_entropy(logits.float().flatten(0, 1), x.flatten())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        tokens += batch * n_ctx
        if device.type == "cuda" and (step % 50 == 0 or step == args.steps - 1):
            torch.cuda.synchronize()
        if step == 0:  # kernel compilation and allocator warm-up: kept out of tokens/s
            first_step_s = time.perf_counter() - t0
        else:
            t_train += time.perf_counter() - t0
    final = curve[-1]
    return {"name": variant.name, "model": variant.model, "settings": variant.settings,
            "params": params, "lr": lr, "warmup": warmup, "wd": wd, "batch": batch,
            "n_ctx": n_ctx, "precision": precision, "curve": curve,
            "final_valid_bpb": final["valid_bpb"], "updates": final["step"],
            "tokens": final["tokens"], "train_s": final["train_s"],
            "first_step_s": round(first_step_s, 3),
            "tokens_per_s": (final["tokens"] - batch * n_ctx) / max(1e-9, final["train_s"])}


def plot(path_json: Path, path_png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    res = json.loads(path_json.read_text())
    fig, ax = plt.subplots(figsize=(10, 5))
    colors = plt.get_cmap("tab20").colors
    for i, row in enumerate(res["rows"]):
        xs = [c["step"] for c in row["curve"]]
        ys = [c["valid_bpb"] for c in row["curve"]]
        style = "--" if row["model"] == "ref" else "-"
        ax.plot(xs, ys, style, color=colors[(2 * i) % 20 if i < 10 else (2 * i + 1) % 20],
                label=f"{row['name']} ({row['final_valid_bpb']:.3f})")
    finals = [r["final_valid_bpb"] for r in res["rows"]]
    refs = list(res.get("compressors", {}).values())
    lo = min(finals + refs) - 0.15
    hi = max(finals) + 1.2
    for name, v in res.get("compressors", {}).items():
        ax.axhline(v, color="grey", lw=0.8, ls=":")
        ax.annotate(f"{name} {v:.2f}", (1.0, v), xycoords=("axes fraction", "data"),
                    ha="right", va="bottom", fontsize=7, color="dimgrey")
    ax.set_xlabel("updates (same batches for every curve)")
    ax.set_ylabel("validation bits per byte")
    cfg = res["config"]
    ax.set_title(f"{res['title']}: preset {cfg['preset']}, {cfg['steps']} updates, "
                 f"batch {cfg['batch']}", fontsize=9)
    ax.set_ylim(max(0.0, lo), hi)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    fig.savefig(path_png, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--study", choices=sorted(STUDIES), help="a named list of variants")
    ap.add_argument("--variant", nargs="+", action="append", default=[],
                    metavar="WORD", help="NAME ours|ref [key=value ...] (repeatable)")
    ap.add_argument("--preset", default="wiki-small", help="ModelConfig preset for both models")
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                    help="ModelConfig override applied to every variant")
    ap.add_argument("--data", default="wiki", help="data set name or prepared directory")
    ap.add_argument("--data-root", default="data")
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--minutes", type=float, default=0.0,
                    help="stop a variant after this much training time (0: no limit)")
    ap.add_argument("--budget", type=float, default=0.0,
                    help="seconds for the whole run; later variants are skipped (0: no limit)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--wd", type=float, default=0.01)
    ap.add_argument("--beta2", type=float, default=0.999)
    ap.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    ap.add_argument("--eval-every", type=int, default=50)
    ap.add_argument("--eval-bytes", type=int, default=65536,
                    help="validation bytes (whole windows from the start of the split)")
    ap.add_argument("--eval-batch", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--title", default="learning benchmark")
    ap.add_argument("--out", type=Path, help="write OUT.json and OUT.png")
    ap.add_argument("--plot", type=Path, help="only redraw the PNG of this JSON")
    args = ap.parse_args(argv)
    if args.plot:
        plot(args.plot, args.plot.with_suffix(".png"))
        return 0
    variants = [Variant.parse(w) for w in (STUDIES.get(args.study, []) + args.variant)]
    if not variants:
        ap.error("give --study or at least one --variant")
    args.overrides = dict((kv.split("=", 1)[0], _literal(kv.split("=", 1)[1])) for kv in args.set)
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu")
                          if args.device == "auto" else args.device)
    data = resolve_data(args.data, args.data_root, prepare_missing=False)
    train = np.asarray(data.split("train"))
    args.record = data.record_size if data.kind == "image" else None
    counts = np.bincount(train[: 1 << 24], minlength=256).astype(np.float64) + 0.5
    UNIGRAM["log_freq"] = torch.from_numpy(np.log(counts / counts.sum())).float()
    n_ctx = ModelConfig.from_preset(args.preset, **args.overrides).n_ctx
    valid = np.asarray(data.split("valid"))[:args.eval_bytes]
    n_win = valid.size // n_ctx
    windows = torch.from_numpy(valid[:n_win * n_ctx].astype(np.int64)).view(n_win, n_ctx)

    def log(msg: str) -> None:
        print(msg, flush=True)

    from sparse_transformer.baselines import stream_bits as compressor_bpb

    result = {"title": args.title, "config": {k: v for k, v in vars(args).items()
                                              if k not in ("out", "plot", "variant",
                                                           "overrides")},
              "machine": {"device": str(device), "torch": torch.__version__,
                          "gpu": torch.cuda.get_device_name() if device.type == "cuda" else None,
                          "cpu_threads": torch.get_num_threads(), "host": platform.node()},
              "eval_bytes": int(windows.numel()),
              "compressors": compressor_bpb(windows.numpy().astype(np.uint8).tobytes()),
              "rows": []}
    result["config"]["variants"] = [[v.name, v.model, v.settings] for v in variants]
    t_start = time.time()
    for v in variants:
        if args.budget and time.time() - t_start > args.budget:
            log(f"budget of {args.budget:.0f} s reached: {v.name} skipped")
            result.setdefault("skipped", []).append(v.name)
            continue
        try:
            result["rows"].append(train_variant(v, args, train, windows, device, log))
        except Exception as err:  # keep going: one failing variant must not lose the rest
            import traceback

            traceback.print_exc()
            result.setdefault("failed", []).append({"name": v.name,
                                                    "error": f"{type(err).__name__}: {err}"})
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.with_suffix(".json").write_text(json.dumps(result, indent=1, default=str))
    print(f"\n{'variant':32s} {'bits/byte':>9s} {'updates':>7s} {'tokens/s':>9s}")
    for r in result["rows"]:
        print(f"{r['name']:32s} {r['final_valid_bpb']:9.4f} {r['updates']:7d} "
              f"{r['tokens_per_s']:9.0f}")
    if args.out:
        plot(args.out.with_suffix(".json"), args.out.with_suffix(".png"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
