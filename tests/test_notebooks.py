"Every notebook in nbs/ is one test: its cells run top to bottom, flagged cells skipped."
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from run_notebooks import NBS, run_notebook  # noqa: E402


def test_there_are_notebooks():
    assert len(NBS) > 0, "no notebooks found in nbs/"


@pytest.mark.parametrize("nb", NBS, ids=[p.stem for p in NBS])
def test_notebook(nb):
    run_notebook(nb)
