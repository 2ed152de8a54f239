"""Run the notebooks in `nbs/` the way `make test` does, optionally saving their outputs.

Cells flagged with one of `[tool.nbdev].tst_flags` (gpu, weights, slow) are skipped unless the
flag is listed in the environment variable MVSK_FLAGS (e.g. `MVSK_FLAGS="slow"`).
"""
import argparse, os, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NBS = sorted((ROOT / "nbs").glob("[0-9a]*.ipynb"))   # the main path and the workbench (numbered), then the appendices (a1, a2, ...)
# Stored figures are thumbnails: `--save` downscales every PNG output to at most THUMB_PX on its longer side and
# stores it with a 256-colour palette, so the notebooks show their pictures and the repository stays light.
THUMB_PX = 720


def skip_and_force_flags():
    "The test flags to skip and the ones forced on by MVSK_FLAGS."
    from nbdev.config import get_config
    skip = get_config(ROOT).tst_flags
    skip = skip.split() if isinstance(skip, str) else list(skip)
    return skip, os.environ.get("MVSK_FLAGS", "").split()


def thumbnail_png(data: str, max_px: int = THUMB_PX) -> tuple:
    "A base64 PNG -> (the base64 PNG of its thumbnail: longer side at most `max_px`, 256-colour palette; its own longer side)."
    import base64, io
    from PIL import Image
    img = Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB")
    side = max(img.size)
    if side > max_px: img.thumbnail((max_px, max_px), Image.LANCZOS)
    buf = io.BytesIO()
    img.quantize(256, method=Image.Quantize.MEDIANCUT).save(buf, "PNG", optimize=True)
    return base64.b64encode(buf.getvalue()).decode(), side


def shrink_figures(path):
    "Replace every PNG output of the notebook at `path` by its thumbnail (where it is larger or heavier)."
    import json
    nb = json.loads(Path(path).read_text())
    for c in nb["cells"]:
        for o in c.get("outputs", []):
            data = o.get("data", {})
            if "image/png" in data:
                png = data["image/png"]
                png = "".join(png) if isinstance(png, list) else png
                png = png.replace("\n", "")
                small, side = thumbnail_png(png)
                if len(small) < len(png) or side > THUMB_PX: data["image/png"] = small
    Path(path).write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")


def run_notebook(path, save=False):
    "Execute one notebook in this process; raise with the failing cell's traceback on error."
    from nbdev.test import test_nb
    skip, force = skip_and_force_flags()
    ok, secs = test_nb(path, skip_flags=skip, force_flags=force, basepath=ROOT, save=save)
    if not ok: raise AssertionError(f"notebook {Path(path).name} failed (traceback above)")
    if save: shrink_figures(path)
    return secs


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("notebooks", nargs="*", help="notebook paths (default: every nbs/NN_*.ipynb)")
    ap.add_argument("--save", action="store_true", help="write outputs back into the notebooks")
    a = ap.parse_args()
    for nb in (a.notebooks or NBS):
        t0 = time.time(); run_notebook(Path(nb).resolve(), save=a.save)
        print(f"{Path(nb).name}: {time.time() - t0:.1f} s", flush=True)
