"""Shared fixtures; helpers live in tests_helpers.py (importable from every test module)."""

import os
import sys
from pathlib import Path

# One intra-op thread per test process (and per subprocess a test starts): `make test` runs two
# xdist workers on two cores, and two workers with two OpenMP threads each spend most of their
# time waiting at barriers for a descheduled thread (measured: a small training step went from
# 0.3 s to 4 s). Nothing here is large enough to gain from more threads.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import torch

torch.set_num_threads(1)

sys.path.insert(0, str(Path(__file__).parent))

from tests_helpers import fake_distribution  # noqa: E402

__all__ = ["fake_distribution"]


import json  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _restore_json_module():
    """Undo ``json_numpy.patch()`` (which OpenVLA-OFT-style client code in tests and docs pages
    calls) after every test, so that it cannot change what later tests' ``json`` does."""
    saved = (json.dumps, json.loads, json.dump, json.load)
    yield
    json.dumps, json.loads, json.dump, json.load = saved
