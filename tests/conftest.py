"""The fixtures the test modules share: the synthetic DCT dataset and the small cut of its demo tasks, each written
once for the whole session. Helpers that are not fixtures are in tests/helpers.py."""
from pathlib import Path

import pytest

from dataset.synthetic import write_synthetic_dct
from tests.helpers import write_small_tasks


@pytest.fixture(scope="session")
def dct(tmp_path_factory) -> Path:
    """The synthetic DCT-format data (seed 0), written once; tests that change data copy it first."""
    root = tmp_path_factory.mktemp("dct") / "DATA"
    write_synthetic_dct(root, seed=0)
    return root


@pytest.fixture(scope="session")
def data(dct) -> Path:
    """The same folder under the name most tests use."""
    return dct


@pytest.fixture(scope="session")
def small_tasks(dct, tmp_path_factory) -> Path:
    """The three demo domains as task folders with a few images per class (helpers.SMALL_TASKS), so that a whole
    backbone trains in seconds."""
    return write_small_tasks(dct, tmp_path_factory.mktemp("small"))
