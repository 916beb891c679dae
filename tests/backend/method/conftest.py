"""Fixtures shared by the method's test modules."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def single_torch_thread():
    """One intra-op thread for a module (``pytestmark = pytest.mark.usefixtures("single_torch_thread")``): on the
    shared 2-core CI box, OpenMP oversubscription makes small ops ~5x slower."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
