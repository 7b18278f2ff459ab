"""Decoding one byte at a time through the model's key/value caches (paper 6; issue 6).

    dec = Decoder(model, batch=4)
    logits = dec.prefill(prompt)        # [4, T] -> logits [4, V] of the byte after the prompt
    logits = dec.step(next_bytes)       # [4]    -> logits of the byte after those

Both are ``model(x, state)`` with the model's ``decode_state`` (``model/state.py``): the
prefill is the model's ordinary forward pass over the prompt, which leaves every layer's keys
and values in its pattern-aware cache (``kernels/kv_cache.py``), so a long prompt costs one
parallel pass; a step is the same modules over one position, attending through the caches.
q.k, softmax and p.v run in fp32 there, as the paper does when sampling (5.6).

On CUDA the step is captured once in a CUDA graph: the byte goes into a static buffer, the
position advances in a device tensor inside the graph, and a byte costs one graph replay. If
capture fails the step runs eagerly (with a warning). Nothing here waits on the device.

At batch 1 a step of the torch cache is ~400 small kernels (12 layers: layer norms, four
GEMVs, the cache's scatters, gathers, q.k, softmax, p.v), each a few microseconds on the GPU
even inside a graph. The fused step, the default on CUDA, replaces each layer's cache step
(~14 kernels of a strided layer) with one or two Triton launches per head group
(``kernels/triton_decode.py``): at 65,536 positions, batch 1, on an H100 a 12-layer step
takes 0.74 ms (strided) and 0.80 ms (fixed) against 2.64 and 2.78 ms for the dense cache
(3.6x and 3.5x; 1.09 and 1.08 ms unfused; ``benchmarks/sampling.py --fused``). (A ``torch.compile`` of the
step was tried on 5 Dec and removed: slower for strided and dense at 65,536, docs/sampling.md.)

Shapes: B batch, T prompt length, V vocabulary.
"""

from __future__ import annotations

import warnings

import torch

from sparse_transformer.model.transformer import SparseTransformer


class Decoder:
    """Decode ``batch`` sequences of ``model`` one byte per step.

    Args:
        model: a ``SparseTransformer`` in eval mode (``generate`` sees to that).
        batch: number of sequences decoded together.
        capacity: positions the caches hold (default and maximum n_ctx); a short sample from a
            long-context model needs only prompt + new bytes, and the causal, summary and
            column stores (and their reads) shrink with it.
        dense: use the dense baseline cache (every position stored and read; benchmarks).
        cuda_graph: "auto" (capture on CUDA), True (require capture), False (eager).
        fused: each layer's cache step as one Triton launch per head group
            (``kernels/triton_decode.py``; CUDA, or Triton's interpreter on the CPU). "auto":
            on CUDA for the pattern cache in fp16/bf16/fp32; the torch step elsewhere.
    """

    def __init__(self, model: SparseTransformer, batch: int, *, capacity: int | None = None,
                 dense: bool = False, cuda_graph: bool | str = "auto",
                 fused: bool | str = "auto"):
        self.model = model
        if fused == "auto":
            weight = model.head.weight
            fused = (weight.device.type == "cuda" and not dense
                     and weight.dtype in (torch.float16, torch.bfloat16, torch.float32))
        self.state = model.decode_state(batch, capacity, dense=dense, fused=fused)
        device = self.state.pos.device
        self.token = torch.zeros(batch, 1, dtype=torch.long, device=device)  # the step's input
        want = cuda_graph if cuda_graph != "auto" else device.type == "cuda"
        self._want_graph = bool(want)
        self._graph: torch.cuda.CUDAGraph | None = None
        self._graph_logits: torch.Tensor | None = None  # the graph's output (static memory)

    @property
    def batch(self) -> int:
        return self.state.batch

    @property
    def capacity(self) -> int:
        return self.state.capacity

    @property
    def length(self) -> int:
        """Positions in the caches (prompt + 1, then one more per step)."""
        return self.state.length

    @property
    def graph(self) -> bool:
        """Whether steps replay a captured CUDA graph."""
        return self._graph is not None

    @property
    def nbytes(self) -> int:
        return self.state.nbytes

    def slots_read_per_token(self) -> int:
        return self.state.slots_read_per_token()

    @torch.inference_mode()
    def prefill(self, tokens: torch.Tensor) -> torch.Tensor:
        """Run the prompt ``tokens`` [B, T] (T may be 0) from position 0, forgetting anything
        decoded before; return logits [B, V] of the byte after it."""
        if tokens.dim() != 2 or tokens.shape[0] != self.batch:
            raise ValueError(f"prefill expects tokens [{self.batch}, T], got "
                             f"{tuple(tokens.shape)}")
        self.state.reset()
        return self.model(tokens, self.state)[:, -1]

    @torch.inference_mode()
    def step(self, token: torch.Tensor) -> torch.Tensor:
        """Append ``token`` [B] (the byte at position length - 1); return logits [B, V] of the
        byte after it."""
        if self.state.length == 0:
            raise RuntimeError("call prefill (possibly with an empty prompt) before step")
        if self.model.training:  # a step has no dropout (what model(x, state) checks too)
            raise ValueError("decoding needs the model in eval mode (model.eval())")
        if self.state.length >= self.state.capacity:
            raise ValueError(f"the cache is full: {self.state.capacity} positions decoded")
        self.token.copy_(token.reshape(self.batch, 1))
        if self._want_graph and self._graph is None:
            try:
                self._capture()
            except Exception as err:  # e.g. an op without capture support on this build
                warnings.warn(f"CUDA graph capture failed ({err}); decoding eagerly",
                              stacklevel=2)
                self._want_graph = False
        if self._graph is None:
            logits = self.model.decode_step(self.token, self.state)
            self.state.length += 1
            return logits[:, -1]
        self._graph.replay()  # advances the device position; the host count is ours to keep
        self.state.length += 1
        return self._graph_logits[:, -1]

    def _capture(self) -> None:
        """Record one step in a CUDA graph (a few eager warm-up steps first, position restored;
        the slots they wrote are written again by the real step)."""
        st = self.state
        pos, length = st.pos.clone(), st.length

        def restore() -> None:
            st.pos.copy_(pos)
            st.length = length

        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(2):
                restore()
                self.model.decode_step(self.token, st)
        torch.cuda.current_stream().wait_stream(stream)
        restore()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self._graph_logits = self.model.decode_step(self.token, st)
        restore()
        self._graph = graph
