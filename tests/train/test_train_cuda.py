"""Training on CUDA (``pytest -m cuda``; skipped without a GPU, run in every device session):
what the CPU tests cannot reach: bf16 autocast, fused AdamW, the Triton op inside the model on
sequences of several query tiles whose plans skip tiles, a checkpoint written from GPU tensors
that loads on the CPU, and a resume on the GPU."""

from __future__ import annotations

import pytest
import torch

from sparse_transformer import SparseTransformer
from sparse_transformer.train.checkpoint import load_checkpoint
from sparse_transformer.train.loop import TrainConfig, train

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


# wiki-tiny at 512 positions with a stride-128 fixed pattern: bf16 Triton tiles are 128 query
# rows by 32 keys, so a sequence is four query tiles and each skips key tiles (the preset's
# own 64 positions would be less than one query tile, its stride 8 would fill every key tile).
MODEL = {"backend": "triton", "n_ctx": 512,
         "attention": "fixed(stride=128, summary=32, distinct=2)"}


def _cfg(data, out, **kw) -> TrainConfig:
    base = dict(data=str(data), preset="wiki-tiny", out=str(out), steps=60, batch_size=8,
                lr=3e-3, warmup=5, eval_every=0, eval_bytes=0, eval_batch=8, save_every=0,
                progress=False, tensorboard=False, device="cuda", precision="bf16",
                model=MODEL)
    return TrainConfig(**{**base, **kw})


def test_bf16_run_on_the_gpu_learns_saves_and_resumes(byte_file, tmp_path, count_backend_calls):
    from sparse_transformer import ModelConfig
    from sparse_transformer import patterns as P
    from sparse_transformer.kernels.triton_attention import block_sizes

    cfg = ModelConfig.from_preset("wiki-tiny", **MODEL)
    qb, kb = block_sizes(cfg.d_qk // cfg.n_head, torch.bfloat16, torch.device("cuda"))
    assert cfg.n_ctx >= 4 * qb
    plan = cfg.layer_pattern(0).plan(cfg.n_ctx, cfg.n_head, qb, kb)
    assert plan.tiles_computed() < P.causal().plan(cfg.n_ctx, cfg.n_head, qb, kb).tiles_computed()
    calls = count_backend_calls("triton")
    run = tmp_path / "run"

    def stop_at_40(row):
        if row["step"] == 40:
            row["stop"] = True

    first = train(_cfg(byte_file, run), callback=stop_at_40)
    assert first["step"] == 40 and len(calls) >= 40 * cfg.n_layer  # the Triton op ran
    assert next(first["model"].parameters()).is_cuda
    # CPU fp32 ("torch" backend, same config): 2.78 -> 1.29 nats at step 40
    assert first["losses"][-1] < first["losses"][0] - 1.0, first["losses"][::10]

    ckpt = load_checkpoint(run)  # GPU tensors written, CPU tensors read
    assert ckpt.step == 40 and all(w.device.type == "cpu" for w in ckpt.weights.values())
    second = train(_cfg(byte_file, run, resume=True))
    assert second["step"] == 60 and len(second["losses"]) == 20
    assert second["losses"][0] < first["losses"][0] - 1.0  # it went on from the checkpoint
    assert second["valid_bpb"] < 3.0  # CPU fp32, same config, 60 steps: 1.77

    # The final step through safetensors and back onto the GPU: the very same model.
    loaded = SparseTransformer.from_pretrained(run, device="cuda")
    x = torch.randint(0, 256, (2, loaded.cfg.n_ctx), device="cuda")
    with torch.no_grad():
        assert torch.equal(loaded(x), second["model"].eval()(x))


def test_cuda_graphs_run_learns_evaluates_and_resumes(byte_file, tmp_path):
    # What `train --preset enwik8` runs by default on one GPU (train/recipes.py): compiled
    # blocks replayed from CUDA graphs, with an evaluation between updates (inference graphs
    # beside the training ones) and a resume. Same model and data as the test above.
    cfg = TrainConfig(preset="wiki-tiny", cuda_graphs=True)
    assert cfg.speed_options("cuda", 1) == (True, True)
    run = tmp_path / "graphs"
    first = train(_cfg(byte_file, run, steps=40, cuda_graphs=True, eval_every=20,
                       eval_bytes=4096))
    assert first["step"] == 40
    assert first["losses"][-1] < first["losses"][0] - 1.0, first["losses"][::10]
    assert first["valid_bpb"] is not None and first["valid_bpb"] < 4.0
    # the same seed and data, no dropout, with and without graphs and compile: the same
    # curve, to bf16 rounding and fusion (5%; a stale graph buffer would be far off)
    plain = {**MODEL, "dropout": 0.0}
    graphed = train(_cfg(byte_file, tmp_path / "g", steps=10, cuda_graphs=True, model=plain))
    eager = train(_cfg(byte_file, tmp_path / "e", steps=10, compile=False, model=plain))
    for a, b in zip(graphed["losses"], eager["losses"]):
        assert abs(a - b) < 0.05 * b, (graphed["losses"], eager["losses"])
    second = train(_cfg(byte_file, run, steps=60, cuda_graphs=True, resume=True))
    assert second["step"] == 60 and second["losses"][0] < first["losses"][0] - 1.0
    # handed back eager, so decoding (which captures its own CUDA graph) can use it
    model = second["model"].eval()
    assert all(block._compiled_call_impl is None for block in model.blocks)
    out = model.generate(b"ab", n_bytes=8, seed=0)
    assert len(out) == 10 and out[:2] == b"ab"
