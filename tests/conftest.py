"""Fixtures shared by test modules (used by name; none is autouse)."""

import pytest
import torch


@pytest.fixture
def one_torch_thread():
    """torch on one CPU thread for the test (the machine's cores are shared), then as before."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
