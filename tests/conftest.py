import os

import pytest
import torch
from hypothesis import settings

settings.register_profile("ci", max_examples=25, deadline=None, derandomize=True)
settings.register_profile("dev", max_examples=10, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))




@pytest.fixture(scope="session")
def shared_data():
    """Path to the shared real data; skips the test when it is absent."""
    from .shared import DATA

    if not DATA.is_dir():
        pytest.skip(f"shared data not found at {DATA}")
    return DATA
