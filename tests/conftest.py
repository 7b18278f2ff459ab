"""Suite-wide hygiene: seeded RNGs, no TF32, default dtype restored, CPU-friendly threads."""

import os
import random

import numpy as np
import pytest
import torch

# Triton kernels run through the interpreter when there is no GPU. The variable must be set
# before any kernel module is imported, so it is set here, at collection time.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(autouse=True)
def _hygiene():
    seed = 1234
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    dtype = torch.get_default_dtype()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    yield
    torch.set_default_dtype(dtype)
