"""The numpy polyphase resampler against its textbook definition and against pure tones."""

import numpy as np
import pytest

from sparse_transformer.data.resample import design_lowpass, resample, resample_reference

RATES = [(44100, 12000), (48000, 12000), (8000, 12000), (22050, 12000), (16000, 12000),
         (12000, 12000), (11025, 12000)]


@pytest.mark.parametrize("rate_in,rate_out", RATES)
@pytest.mark.parametrize("n", [1, 5, 333])
def test_matches_float64_definition(rate_in, rate_out, n):
    x = np.random.default_rng(n).standard_normal(n)
    y = resample(x, rate_in, rate_out, dtype=np.float64)
    ref = resample_reference(x, rate_in, rate_out)
    assert y.shape == ref.shape == (-(-n * rate_out // rate_in),)
    np.testing.assert_allclose(y, ref, atol=1e-12, rtol=0)
    y32 = resample(x, rate_in, rate_out)
    assert y32.dtype == np.float32
    np.testing.assert_allclose(y32, ref, atol=1e-4 * max(1, np.abs(ref).max()))


def tone(freq, rate, seconds=1.0):
    t = np.arange(int(rate * seconds)) / rate
    return np.sin(2 * np.pi * freq * t)


@pytest.mark.parametrize("rate_in", [44100, 48000, 8000])
def test_passband_tone_is_kept(rate_in):
    y = resample(tone(1000.0, rate_in), rate_in, 12000, dtype=np.float64)
    want = tone(1000.0, 12000)[: len(y)]
    edge = 300  # the filter's start-up and tail
    assert np.abs(y - want)[edge:-edge].max() < 2e-3


def test_tone_above_new_nyquist_is_removed():
    # 8 kHz is above 12 kHz's 6 kHz Nyquist: without the low-pass it would alias to 4 kHz at
    # full amplitude; the Kaiser-windowed sinc must cut it by at least 40 dB.
    y = resample(tone(8000.0, 44100), 44100, 12000, dtype=np.float64)
    rms = np.sqrt(np.mean(y[300:-300] ** 2))
    assert rms < 0.01 * np.sqrt(0.5)


def test_filter_has_unit_dc_gain_per_phase():
    up, down = 40, 147
    h = design_lowpass(up, down)
    # each polyphase branch sums to ~1, so a constant signal stays constant
    sums = np.array([h[r::up].sum() for r in range(up)])
    np.testing.assert_allclose(sums, 1.0, atol=2e-3)


def test_bad_arguments():
    with pytest.raises(ValueError, match="positive integers"):
        resample(np.zeros(10), 0, 12000)
    with pytest.raises(ValueError, match="positive integers"):
        resample(np.zeros(10), 44100.5, 12000)
    with pytest.raises(ValueError, match="1-D"):
        resample(np.zeros((10, 2)), 44100, 12000)
