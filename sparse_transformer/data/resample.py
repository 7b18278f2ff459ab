"""Rational-ratio resampling by a polyphase windowed-sinc filter, in numpy only.

The paper trains on audio at 12 kHz (paper 7.4, Table 4); sources come at 44.1 or
48 kHz. We resample by up/down = new_rate/old_rate in lowest terms: conceptually insert up-1
zeros between samples, low-pass at min(old, new)/2, keep every down-th sample. The low-pass is
a Kaiser-windowed sinc with ``zeros`` zero crossings on each side of the slower rate and
beta 5.0 (the same design choices as scipy.signal.resample_poly, so results are comparable;
scipy is not a dependency of this package, and the 25 lines below avoid adding it).

Only the non-zero taps are ever multiplied: output m needs filter phase r = (m*down + half) % up,
and all outputs m = m0 + j*up share a phase, reading input samples spaced ``down`` apart. So
each of the ``up`` phases is one strided [J, K] view of the input times a K-tap vector
(a BLAS matrix-vector product), J = outputs of that phase, K = taps per phase.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["design_lowpass", "resample", "resample_reference"]


def design_lowpass(up: int, down: int, zeros: int = 10, beta: float = 5.0) -> np.ndarray:
    """Kaiser-windowed sinc, float64 [2*zeros*max(up, down) + 1], cut-off at the slower
    Nyquist rate, gain ``up`` (to make up for the inserted zeros)."""
    m = max(up, down)
    half = zeros * m
    n = np.arange(-half, half + 1, dtype=np.float64)
    h = np.sinc(n / m) / m * np.kaiser(2 * half + 1, beta)
    return h * up


def _ratio(rate_in: int, rate_out: int) -> tuple[int, int]:
    if int(rate_in) != rate_in or int(rate_out) != rate_out or rate_in <= 0 or rate_out <= 0:
        raise ValueError(f"sample rates must be positive integers, got {rate_in} -> {rate_out}")
    g = math.gcd(int(rate_in), int(rate_out))
    return int(rate_out) // g, int(rate_in) // g


def resample(x: np.ndarray, rate_in: int, rate_out: int, dtype=np.float32) -> np.ndarray:
    """Resample a 1-D signal [n] from ``rate_in`` to ``rate_out`` Hz -> [ceil(n*up/down)].

    The output is aligned with the input (sample 0 at time 0; the filter delay is removed) and
    computed in ``dtype`` (float32 for audio data, float64 for checks).
    """
    x = np.asarray(x, dtype=dtype)
    if x.ndim != 1:
        raise ValueError(f"resample expects a 1-D signal, got shape {tuple(x.shape)}")
    up, down = _ratio(rate_in, rate_out)
    if up == down == 1:
        return x.copy()
    h = design_lowpass(up, down).astype(dtype)
    half = (len(h) - 1) // 2
    n_out = -(-len(x) * up // down)  # ceil
    k_max = -(-len(h) // up)  # taps in the longest phase
    # Pad so every strided read is in bounds: k_max zeros before, enough after.
    pad_r = half // up + down + 2
    xp = np.concatenate([np.zeros(k_max, dtype), x, np.zeros(pad_r, dtype)])
    y = np.empty(n_out, dtype)
    item = xp.itemsize
    for m0 in range(min(up, n_out)):
        t0 = m0 * down + half
        r, n_hi = t0 % up, t0 // up
        taps = h[r::up]  # h[r + k*up], k = 0..K-1, multiplies x[n_hi + j*down - k]
        k = len(taps)
        j = len(range(m0, n_out, up))
        start = n_hi - (k - 1) + k_max  # index in xp of x[n_hi - (k-1)] for j = 0
        view = np.lib.stride_tricks.as_strided(xp[start:], shape=(j, k),
                                               strides=(down * item, item), writeable=False)
        y[m0::up] = view @ taps[::-1]
    return y


def resample_reference(x: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """The same resampling by the textbook definition, float64, O(n_out * n): for tests.

    y[m] = sum_n h[m*down + half - n*up] x[n] (zero-stuffed input convolved with h, decimated).
    """
    x = np.asarray(x, dtype=np.float64)
    up, down = _ratio(rate_in, rate_out)
    h = design_lowpass(up, down)
    half = (len(h) - 1) // 2
    n_out = -(-len(x) * up // down)
    y = np.zeros(n_out)
    n = np.arange(len(x))
    for m in range(n_out):
        idx = m * down + half - n * up
        ok = (idx >= 0) & (idx < len(h))
        y[m] = np.dot(h[idx[ok]], x[ok])
    return y
