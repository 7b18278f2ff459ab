"""The fused decoding step (``kernels/triton_decode.py``, ``Decoder(fused=True)``) vs the
float64 reference (CPU: Triton's interpreter; on a CUDA machine the same tests run on the GPU).

A float32 model decodes a random sequence through the fused kernel, one launch per head group
and layer; every step's logits are compared with the full forward pass of the same weights in
float64 on the "reference" backend, and with the torch cache step of the same model; once as
the kernel runs short reads (one program per head) and once with every read split. The
patterns cover each term kind the kernel's slots come from: windows, strided columns gathered
from their residue rows, fixed summaries and groups, split and per-head head groups (whose heads
are not contiguous, so the kernel writes outputs out of group order), and a dense ``causal()``.
"""

from __future__ import annotations

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is first imported

pytest.importorskip("triton")

from sparse_transformer.model import ModelConfig, SparseTransformer  # noqa: E402
from sparse_transformer.sample.decode import Decoder  # noqa: E402

pytestmark = pytest.mark.triton
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
N_CTX, PROMPT = 40, 31

PATTERNS = [
    "causal()",
    "strided(stride=4, mode='split')",
    "strided(stride=6, mode='merge')",
    "fixed(stride=8, summary=2, distinct=4)",
    "per_head(local(window=3), column(stride=4), local(window=3), column(stride=4))",
    "union(local(window=3), fixed(stride=8, summary=3, distinct=2))",
]


def _models(attention: str) -> tuple[SparseTransformer, SparseTransformer]:
    cfg = ModelConfig(n_layer=2, d_model=32, n_head=4, n_ctx=N_CTX, embed_stride=8,
                      attention=attention)
    model = SparseTransformer(cfg).eval()
    with torch.no_grad():  # leave the paper's init (zero logits matrix, zero biases) behind
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))
    ref = SparseTransformer(cfg.replace(backend="reference")).eval()
    ref.load_state_dict(model.state_dict())
    return model.to(DEVICE), ref.to(DEVICE, torch.float64)


def _decode(model: SparseTransformer, x: torch.Tensor, fused: bool) -> torch.Tensor:
    dec = Decoder(model, x.shape[0], fused=fused, cuda_graph=False)
    assert all(c.fused == fused for c in dec.state.caches)
    out = [dec.prefill(x[:, :PROMPT])]
    for t in range(PROMPT, x.shape[1] - 1):
        out.append(dec.step(x[:, t]))
    return torch.stack(out, 1)


@pytest.mark.parametrize("attention,chunk", [(a, None) for a in PATTERNS]
                         + [(a, 8) for a in PATTERNS[1:5]])
def test_fused_steps_match_float64(attention, chunk, monkeypatch):
    # chunk 8: every read split over several programs (some wholly masked) and combined by
    # the second launch, as reads longer than CHUNK are on a GPU
    from sparse_transformer.kernels import triton_decode

    if chunk is not None:
        monkeypatch.setattr(triton_decode, "CHUNK", chunk)
    model, ref = _models(attention)
    x = torch.randint(0, 256, (2, N_CTX), device=DEVICE)
    fused = _decode(model, x, fused=True)
    with torch.no_grad():
        full = ref(x)[:, PROMPT:]
    torch.testing.assert_close(fused.double(), full, atol=2e-5, rtol=2e-5)
    # and as close to float64 as the torch step of the same float32 model is
    torch_err = (_decode(model, x, fused=False).double() - full).abs().max().item()
    assert (fused.double() - full).abs().max().item() <= 2 * torch_err + 1e-6


def test_fused_refuses_float64():
    model, _ = _models("causal()")
    with pytest.raises(TypeError, match="fused decoding"):
        Decoder(model.double(), 1, fused=True, cuda_graph=False)


def test_pick_chunk_splits_short_batches_over_the_gpu_and_caps_long_reads():
    from sparse_transformer.kernels.triton_decode import BLOCK_S, CHUNK, pick_chunk

    # batch 1, 4 heads, a strided read of 512 slots on 132 SMs: one BLOCK_S step a program
    assert pick_chunk(512, 4, 132) == BLOCK_S
    # a fixed read of 2,560 slots by 8 programs: 17 splits wanted, whole steps of BLOCK_S
    c = pick_chunk(2560, 8, 132)
    assert c % BLOCK_S == 0 and -(-2560 // c) * 8 >= 132 // 2 and c <= CHUNK
    # batch 64 fills the GPU already: as long as CHUNK allows
    assert pick_chunk(512, 256, 132) == CHUNK
    assert pick_chunk(5000, 256, 132) == CHUNK
    assert pick_chunk(10, 1, 132) == BLOCK_S  # a read shorter than one step: one program


def test_fused_windows_past_n_ctx_match_the_torch_step():
    # generate's sliding windows (sample/generate.py): a new window re-prefills the caches
    # it reuses, then steps; the fused step must read the refilled slots, not stale ones.
    model, _ = _models("fixed(stride=8, summary=2, distinct=4)")
    x = torch.randint(0, 256, (2, 3 * N_CTX), device=DEVICE)
    decs = {f: Decoder(model, 2, fused=f, cuda_graph=False) for f in (False, True)}
    for start in (0, 9, 2 * N_CTX - 5):
        got = {f: [d.prefill(x[:, start:start + 20])] for f, d in decs.items()}
        for t in range(start + 20, start + N_CTX - 1):
            for f, d in decs.items():
                got[f].append(d.step(x[:, t]))
        torch.testing.assert_close(torch.stack(got[True]), torch.stack(got[False]),
                                   atol=2e-5, rtol=2e-5, msg=f"window at {start}")


def test_the_default_decoder_is_fused_on_cuda_only():
    model, _ = _models("strided(stride=4, mode='split')")
    dec = Decoder(model, 1, cuda_graph=False)
    assert all(c.fused == (DEVICE == "cuda") for c in dec.state.caches)
    dense = Decoder(model, 1, dense=True, cuda_graph=False)  # the baseline keeps cuBLAS
    assert not any(c.fused for c in dense.state.caches)
