import os
import shutil
import subprocess

import numpy as np
import pytest


@pytest.fixture(scope="session")
def quarry_bin():
    """The command line of the same build (ctest sets QUARRY_BIN)."""
    path = os.environ.get("QUARRY_BIN") or shutil.which("quarry")
    if not path:
        pytest.skip("no quarry command line (set QUARRY_BIN)")
    return path


@pytest.fixture
def cli(quarry_bin):
    def run(*args, check=True):
        r = subprocess.run([quarry_bin, *map(str, args)], capture_output=True, text=True)
        if check and r.returncode != 0:
            raise AssertionError(f"quarry {' '.join(map(str, args))}: exit {r.returncode}\n{r.stderr}")
        return r
    return run


def softmax_rows(rng, n, c, dtype=np.float32):
    z = rng.standard_normal((n, c)) * 2.0
    p = np.exp(z - z.max(axis=1, keepdims=True))
    return (p / p.sum(axis=1, keepdims=True)).astype(dtype)


@pytest.fixture
def rng():
    return np.random.default_rng(7)
