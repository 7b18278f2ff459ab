"""Training on CUDA (``pytest -m cuda``; skipped without a GPU, run in every device session):
what the CPU tests cannot reach: bf16 autocast, fused AdamW, the Triton op inside the model, a
checkpoint written from GPU tensors that loads on the CPU, and a resume on the GPU."""

from __future__ import annotations

import pytest
import torch

from sparse_transformer import SparseTransformer
from sparse_transformer.train.checkpoint import load_checkpoint
from sparse_transformer.train.loop import TrainConfig, train

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def _cfg(data, out, **kw) -> TrainConfig:
    base = dict(data=str(data), preset="wiki-tiny", out=str(out), steps=60, batch_size=8,
                lr=3e-3, warmup=5, eval_every=0, eval_bytes=0, eval_batch=8, save_every=0,
                progress=False, tensorboard=False, device="cuda", precision="bf16",
                model={"backend": "triton"})
    return TrainConfig(**{**base, **kw})


def test_bf16_run_on_the_gpu_learns_saves_and_resumes(byte_file, tmp_path):
    run = tmp_path / "run"

    def stop_at_40(row):
        if row["step"] == 40:
            row["stop"] = True

    first = train(_cfg(byte_file, run), callback=stop_at_40)
    assert first["step"] == 40
    assert next(first["model"].parameters()).is_cuda
    assert first["losses"][-1] < first["losses"][0] - 1.0, first["losses"][::10]  # CPU fp32: -1.8

    ckpt = load_checkpoint(run)  # GPU tensors written, CPU tensors read
    assert ckpt.step == 40 and all(w.device.type == "cpu" for w in ckpt.weights.values())
    second = train(_cfg(byte_file, run, resume=True))
    assert second["step"] == 60 and len(second["losses"]) == 20
    assert second["losses"][0] < first["losses"][0] - 1.0  # it went on from the checkpoint
    assert second["valid_bpb"] < 3.0  # CPU fp32, 40 steps: 1.43

    # The final step through safetensors and back onto the GPU: the very same model.
    loaded = SparseTransformer.from_pretrained(run, device="cuda")
    x = torch.randint(0, 256, (2, loaded.cfg.n_ctx), device="cuda")
    with torch.no_grad():
        assert torch.equal(loaded(x), second["model"].eval()(x))
