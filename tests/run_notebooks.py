"""Run the notebooks in `nbs/` the way `make test` does, optionally saving their outputs.

Cells flagged with one of `[tool.nbdev].tst_flags` (gpu, weights, slow) are skipped unless the
flag is listed in the environment variable MVSK_FLAGS (e.g. `MVSK_FLAGS="slow"`).
"""
import argparse, os, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NBS = sorted((ROOT / "nbs").glob("[0-9]*.ipynb"))
# Notebooks whose figures are images of noise on the random tiny model (megabytes of incompressible PNG):
# `--save` leaves their outputs out of the repository.
NO_SAVE = {"08_pipeline.ipynb"}


def skip_and_force_flags():
    "The test flags to skip and the ones forced on by MVSK_FLAGS."
    from nbdev.config import get_config
    skip = get_config(ROOT).tst_flags
    skip = skip.split() if isinstance(skip, str) else list(skip)
    return skip, os.environ.get("MVSK_FLAGS", "").split()


def run_notebook(path, save=False):
    "Execute one notebook in this process; raise with the failing cell's traceback on error."
    from nbdev.test import test_nb
    skip, force = skip_and_force_flags()
    ok, secs = test_nb(path, skip_flags=skip, force_flags=force, basepath=ROOT, save=save)
    if not ok: raise AssertionError(f"notebook {Path(path).name} failed (traceback above)")
    return secs


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("notebooks", nargs="*", help="notebook paths (default: every nbs/NN_*.ipynb)")
    ap.add_argument("--save", action="store_true", help="write outputs back into the notebooks")
    a = ap.parse_args()
    for nb in (a.notebooks or NBS):
        t0 = time.time(); run_notebook(Path(nb).resolve(), save=a.save and Path(nb).name not in NO_SAVE)
        print(f"{Path(nb).name}: {time.time() - t0:.1f} s", flush=True)
