import numpy as np
import pytest


@pytest.fixture
def byte_file(tmp_path):
    """40 KB of text-like bytes (a repeated sentence with noise), as a raw data file."""
    rng = np.random.default_rng(0)
    base = np.frombuffer(b"the sparse transformer reads bytes of wikipedia text. " * 800,
                         dtype=np.uint8).copy()
    noise = rng.integers(0, 256, base.size, dtype=np.uint8)
    base[rng.random(base.size) < 0.05] = noise[rng.random(base.size) < 0.05][:1][0]
    f = tmp_path / "corpus.txt"
    f.write_bytes(base.tobytes())
    return f
