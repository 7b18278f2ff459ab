"""``TrainConfig``: the options of one training run, all checked when it is built.

It imports neither torch nor the model, so ``sparse-transformer train --help`` can show these
defaults without loading torch. Checks that need the model (evaluation windows against n_ctx)
or the disk (the run directory) happen in ``train.loop`` before any work.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from sparse_transformer.checks import (
    check_bool,
    check_choice,
    check_device,
    check_float,
    check_int,
    check_text,
)
from sparse_transformer.precision import PRECISIONS
from sparse_transformer.train.recipes import GPU_ONLY, RECIPES, recipe

MAX_SEED = 2**62  # torch seeds are 64-bit; each rank adds its rank to the seed
MAX_MINUTES = 1_000_000  # about two years: a budget beyond it is a typo (1e300 overflows the clock)


def flag(name: str) -> str:
    """The command-line spelling of a field: eval_bytes -> --eval-bytes."""
    return "--" + name.replace("_", "-")


@dataclass
class TrainConfig:
    """Options of one training run (CLI flags of ``sparse-transformer train``)."""

    data: str = "wiki"                 # data set name, prepared directory, or any file
    data_root: str = "data"            # where named data sets are prepared
    preset: str = "wiki-small"         # ModelConfig preset ...
    model: dict[str, Any] = field(default_factory=dict)  # ... with these field overrides
    out: str = "runs/wiki-small"       # run directory
    # Fields marked "recipe" default to the preset's recipe (train/recipes.py), else BASE there.
    steps: int | None = None           # optimizer updates; default 1000 unless max_minutes
    max_minutes: float | None = None   # recipe; wall-clock budget (evaluation included);
                                       # without steps the cosine decay follows the clock
    batch_size: int | None = None      # recipe; windows per micro-batch per process
    grad_accum: int = 1                # micro-batches per update
    lr: float | None = None            # recipe; peak learning rate
    warmup: int | None = None          # recipe; paper: 5,000 for its long runs
    min_lr_ratio: float | None = None  # recipe; cosine decays to lr * this
    weight_decay: float | None = None  # recipe; paper 6, matrices only
    output_lr_mult: float | None = None  # recipe; learning-rate factor of the zero-started
                                       # output matrix W_out (train/recipes.py says why)
    compile: bool | None = None        # recipe on one GPU; torch.compile each residual block
    cuda_graphs: bool | None = None    # recipe on one GPU; replay the compiled blocks from CUDA
                                       # graphs (no host cost per kernel; needs compile)
    shard: bool = False                # FSDP2 over the torchrun processes (train/sharding.py)
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    clip: float = 1.0                  # global gradient-norm clip (paper 6)
    eval_every: int | None = None      # recipe; updates between validations (0: at the end)
    eval_bytes: int | None = None      # recipe; validation bytes per evaluation (0: all)
    eval_batch: int = 16
    log_every: int = 10
    save_every: int = 500              # updates between checkpoints (always one at the end)
    keep_last: int = 2                 # checkpoints kept (0: all)
    seed: int = 1337
    precision: str | None = None       # recipe; fp32 | bf16 | fp16 (dynamic loss scaling)
    device: str = "auto"
    resume: bool = False
    force: bool = False                # start again in a run directory that holds a run
    progress: bool = True
    tensorboard: bool = False          # also write TensorBoard events (needs tensorboard)

    def __post_init__(self) -> None:
        for name in ("data", "data_root", "preset", "out"):
            check_text(flag(name), getattr(self, name))
        self._apply_recipe()
        if not isinstance(self.model, dict) or not all(isinstance(k, str) for k in self.model):
            raise ValueError(f"model overrides must be a dict of field names, got {self.model!r}")
        if self.steps is not None:
            check_int(flag("steps"), self.steps, 1)
        if self.max_minutes is not None:
            check_float(flag("max_minutes"), self.max_minutes, 0, MAX_MINUTES, lo_open=True)
        for name in ("batch_size", "grad_accum", "log_every", "eval_batch"):
            check_int(flag(name), getattr(self, name), 1)
        for name in ("warmup", "eval_every", "eval_bytes", "save_every", "keep_last"):
            check_int(flag(name), getattr(self, name), 0)
        check_int(flag("seed"), self.seed, 0, MAX_SEED)
        check_float(flag("lr"), self.lr, 0, lo_open=True)
        check_float(flag("min_lr_ratio"), self.min_lr_ratio, 0, 1)
        check_float(flag("weight_decay"), self.weight_decay, 0)
        check_float(flag("clip"), self.clip, 0, lo_open=True)
        check_float("eps", self.eps, 0, lo_open=True)
        betas = tuple(self.betas) if isinstance(self.betas, (list, tuple)) else ()
        if len(betas) != 2:
            raise ValueError(f"betas must be two numbers in [0, 1), got {self.betas!r}")
        self.betas = tuple(check_float("betas", b, 0, 1, hi_open=True) for b in betas)
        check_choice(flag("precision"), self.precision, PRECISIONS)
        check_device(flag("device"), self.device)
        check_float(flag("output_lr_mult"), self.output_lr_mult, 0, lo_open=True)
        for name in ("resume", "force", "progress", "tensorboard", "shard"):
            check_bool(flag(name), getattr(self, name))
        for name in GPU_ONLY:
            if getattr(self, name) is not None:
                check_bool(flag(name), getattr(self, name))
        if self.cuda_graphs and self.compile is False:
            raise ValueError("--cuda-graphs replays the compiled blocks: drop --no-compile")
        if self.cuda_graphs and (self.shard or self.device == "cpu"):
            raise ValueError("--cuda-graphs runs on one CUDA device without --shard")
        if self.shard and self.precision == "fp16":
            # torch.amp.GradScaler checks only the local gradients for inf/NaN: with sharded
            # gradients the ranks could disagree on skipping a step
            raise ValueError("--shard trains in fp32 or bf16, not fp16 (its loss scaler is not "
                             "shard-aware); use --precision bf16")
        if self.resume and self.force:
            raise ValueError("give --resume (continue the run) or --force (start it again), "
                             "not both")
        if not self.resume:  # a resumed run's model is its checkpoint's (train.start checks)
            self._check_model()

    def _check_model(self) -> None:
        """The preset and the ``model`` overrides must make a valid ModelConfig: refused now,
        not when the loop builds the model. A known preset without overrides needs no check,
        so building the defaults (``train --help``) does not import torch; otherwise the
        check imports the model (and torch)."""
        if self.preset in RECIPES and not self.model:
            return  # every preset has a recipe (tests/train/test_config.py)
        from sparse_transformer.model.config import ModelConfig

        ModelConfig.from_preset(self.preset, **self.model)

    def _apply_recipe(self) -> None:
        """Fill every recipe field left at None from the preset's recipe (then BASE)."""
        values = recipe(self.preset)
        budget_given = self.steps is not None or self.max_minutes is not None
        for name, value in values.items():
            if name == "max_minutes" and budget_given:
                continue  # --steps or --max-minutes given: the recipe's budget does not apply
            if name in GPU_ONLY:
                continue  # decided with the device: speed_options
            if getattr(self, name) is None:
                setattr(self, name, value)

    def speed_options(self, device_type: str, world_size: int = 1) -> tuple[bool, bool]:
        """(compile, cuda_graphs) of this run: the flags given, else the recipe's where one
        CUDA device trains alone (the configuration the recipe was measured in); off on the
        CPU, under --shard and across several processes."""
        gpu = device_type == "cuda"
        measured = recipe(self.preset)
        alone = gpu and world_size == 1 and not self.shard
        graphs = self.cuda_graphs
        if graphs is None:
            graphs = alone and self.compile is not False and bool(measured["cuda_graphs"])
        if graphs and not gpu:
            raise ValueError("--cuda-graphs needs a CUDA device; this run is on the "
                             f"{device_type}")
        compile_ = self.compile
        if compile_ is None:
            compile_ = graphs or (alone and bool(measured["compile"]))
        return bool(compile_), bool(graphs)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def field_names(cls) -> set[str]:
        return {f.name for f in dataclasses.fields(cls)}
