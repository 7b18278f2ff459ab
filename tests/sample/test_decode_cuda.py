"""Cached decoding on CUDA (``pytest -m cuda``; skipped without a GPU, run in every device
session). The prompt runs through the backend the model uses there -- the block-sparse "torch"
backend in float64 (the Triton kernels take no float64), the Triton op ("auto" on CUDA) in
float32 -- on plans that skip tiles, and the steps after it, captured in a CUDA graph, give the
logits of the float64 reference model's full forward pass; ``model.generate`` on the GPU goes
through the graph, also past n_ctx, where each slid window is prefilled again. The CPU tests
never capture a graph."""

from __future__ import annotations

import warnings

import pytest
import torch

from sparse_transformer import ModelConfig, SparseTransformer
from sparse_transformer.kernels import resolve_backend
from sparse_transformer.sample.decode import Decoder

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]

N_CTX, PROMPT = 512, 300
PATTERNS = ["fixed(stride=64, summary=16, distinct=2)", "strided(stride=16, mode='split')"]


def _models(attention: str, dtype: torch.dtype, backend: str):
    """(the model on ``backend`` in ``dtype``, the same weights on "reference" in float64)."""
    torch.manual_seed(0)
    cfg = ModelConfig(n_layer=2, d_model=64, n_head=4, n_ctx=N_CTX, embed_stride=16,
                      attention=attention, backend=backend)
    model = SparseTransformer(cfg).eval()
    with torch.no_grad():  # leave the zero-initialised output matrix and biases behind
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))
    ref = SparseTransformer(cfg.replace(backend="reference")).eval()
    ref.load_state_dict(model.state_dict())
    return model.to("cuda", dtype), ref.to("cuda", torch.float64)


def _decode(dec: Decoder, x: torch.Tensor, prompt: int, end: int) -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="CUDA graph capture failed")  # else eager
        got = [dec.prefill(x[:, :prompt]).clone()]
        for t in range(prompt, end):
            got.append(dec.step(x[:, t]).clone())  # clone: a graph's output is overwritten
    return torch.stack(got, 1)


@pytest.mark.parametrize("attention", PATTERNS)
def test_graph_steps_after_a_block_sparse_prefill_match_float64(attention, count_backend_calls,
                                                                assert_plans_skip_tiles):
    # float64 on both sides: the cached key sets must be the pattern's exactly, not nearly.
    model, ref = _models(attention, torch.float64, "torch")
    assert_plans_skip_tiles(model, PROMPT + 1)  # the prefill runs PROMPT + 1 positions
    x = torch.randint(0, 256, (2, N_CTX), device="cuda")
    calls = count_backend_calls("torch")
    dec = Decoder(model, 2, cuda_graph=True)
    got = _decode(dec, x, PROMPT, N_CTX - 1)
    assert len(calls) >= model.cfg.n_layer, "the prompt did not run on the torch backend"
    assert dec.graph, "the step was not captured"
    with torch.no_grad():
        full = ref(x)
    torch.testing.assert_close(got, full[:, PROMPT:], atol=1e-9, rtol=1e-9)


@pytest.mark.parametrize("attention", PATTERNS)
def test_graph_steps_after_a_triton_prefill_match_the_reference(attention, count_backend_calls,
                                                                assert_plans_skip_tiles):
    model, ref = _models(attention, torch.float32, "auto")
    q = torch.empty(1, 4, PROMPT + 1, 16, device="cuda")
    assert resolve_backend("auto", q, model.cfg.layer_pattern(0)) == "triton"
    assert_plans_skip_tiles(model, PROMPT + 1, backend="triton")
    x = torch.randint(0, 256, (2, N_CTX), device="cuda")
    calls = count_backend_calls("triton")
    dec = Decoder(model, 2, cuda_graph=True)
    got = _decode(dec, x, PROMPT, N_CTX - 1)
    assert len(calls) >= model.cfg.n_layer, "the prompt did not run on the Triton op"
    assert dec.graph
    with torch.no_grad():
        full = ref(x)
    torch.testing.assert_close(got.double(), full[:, PROMPT:], atol=2e-4, rtol=2e-4)


def test_graph_and_eager_steps_agree_and_generate_uses_the_graph_past_n_ctx(monkeypatch):
    model, _ = _models(PATTERNS[0], torch.float32, "auto")
    x = torch.randint(0, 256, (3, N_CTX), device="cuda")
    graph = _decode(Decoder(model, 3, cuda_graph=True), x, 20, 60)
    eager = _decode(Decoder(model, 3, cuda_graph=False), x, 20, 60)
    torch.testing.assert_close(graph, eager, atol=1e-5, rtol=1e-5)

    from sparse_transformer.sample import decode

    made = []
    real = decode.Decoder.__init__
    monkeypatch.setattr(decode.Decoder, "__init__",
                        lambda self, *a, **kw: made.append(self) or real(self, *a, **kw))
    out = model.generate(bytes(range(65, 85)), n_bytes=N_CTX + 100, top_k=8, seed=0)
    assert isinstance(out, bytes) and len(out) == N_CTX + 120
    assert len(made) == 1 and made[0].graph  # one decoder, its steps replayed a graph


@pytest.mark.parametrize("chunk", [None, 16])
@pytest.mark.parametrize("attention", PATTERNS)
def test_fused_graph_steps_match_float64(attention, chunk, monkeypatch):
    # Decoder(fused=True): each layer's cached step is one Triton launch per head group
    # (kernels/triton_decode.py), captured in the CUDA graph; float32 against float64. chunk
    # 16: every read split over many programs that run concurrently with the one storing the
    # new key and value (the kernel takes those slots from registers, not memory)
    from sparse_transformer.kernels import triton_decode

    if chunk is not None:
        monkeypatch.setattr(triton_decode, "CHUNK", chunk)
    model, ref = _models(attention, torch.float32, "auto")
    x = torch.randint(0, 256, (2, N_CTX), device="cuda")
    dec = Decoder(model, 2, cuda_graph=True, fused=True)
    got = _decode(dec, x, PROMPT, PROMPT + 60)
    assert dec.graph and all(c.fused for c in dec.state.caches)
    with torch.no_grad():
        full = ref(x)[:, PROMPT:PROMPT + 61]
    torch.testing.assert_close(got.double(), full, atol=2e-4, rtol=2e-4)


@pytest.mark.parametrize("attention", PATTERNS)
def test_fused_bf16_steps_as_close_to_float64_as_the_torch_step(attention):
    # bf16 weights and caches: the fused step (fp32 q.k, softmax and p.v) is no further from
    # the float64 logits than the torch step (fp32-output GEMMs, p rounded to bf16 for p.v)
    model, ref = _models(attention, torch.bfloat16, "auto")
    x = torch.randint(0, 256, (2, N_CTX), device="cuda")
    fused = _decode(Decoder(model, 2, cuda_graph=True, fused=True), x, PROMPT, PROMPT + 60)
    plain = _decode(Decoder(model, 2, cuda_graph=True), x, PROMPT, PROMPT + 60)
    with torch.no_grad():
        full = ref(x)[:, PROMPT:PROMPT + 61]
    err_fused = (fused.double() - full).abs().max().item()
    err_plain = (plain.double() - full).abs().max().item()
    assert err_fused <= 1.5 * err_plain + 1e-3, (err_fused, err_plain)
