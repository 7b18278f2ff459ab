"""tests/sample: decoding runs hundreds of tiny ops per token; with other jobs on 2 cores,
intra-op threads only contend (measured 40x slower), so these tests run single-threaded."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
