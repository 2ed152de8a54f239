"""mvsk-mini beside its baselines, as BENCHMARKS.md shows it: novel views (the model card's scores on the 40
held-out objects) and keypoints (the `q1_maps` sweep: discovery on the trained mini model and on the same model
with a random UNet, beside the random-points floors, three seeds on 20 held-out objects).

Reads committed results only (seconds):

    .venv/bin/python bench/mini_quality.py

The numbers themselves come from:

    mvsk mini --out DIR --steps 2500                          # the model and training/scores.json (score_model)
    mvsk sweep sweeps/q1_maps.yaml --out outputs/sweeps/q1_maps   # sweeps/results/q1_maps.csv
"""
import csv, json
from pathlib import Path

from mvsk.models import mini_zero123plus
from mvsk.sweep import aggregate

ROOT = Path(__file__).resolve().parents[1]


def views_table(scores: list) -> str:
    lines = ["| method (40 held-out objects) | PSNR | SSIM | foreground IoU |", "|---|---|---|---|"]
    for s in scores:
        cells = [f"{s[k]:.{d}f} ± {s[k + '_se']:.{d}f}" for k, d in (("psnr", 2), ("ssim", 3), ("fg_iou", 3))]
        lines.append(f"| {s['method']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# (row label, variant, method) and (column label, metric, digits)
KEYPOINT_ROWS = [("mvsk on mini (trained)", "trained", "mvsk"), ("mvsk on mini, random UNet", "random_weights", "mvsk"),
                 ("random points on the mask", "trained", "random (mask)"), ("random points in the tile", "trained", "random (tile)"),
                 ("oracle (ground truth + noise)", "trained", "oracle")]
KEYPOINT_COLS = [("peakiness", "layer mean peakiness", 3), ("spatial entropy", "layer mean entropy", 4),
                 ("on object", "layer mean on-object", 2), ("chance", "layer mean chance", 2), ("PCK@0.1", "PCK@0.1", 2),
                 ("MV-PCK@0.1", "MV-PCK@0.1", 2), ("3D error", "3D err", 3), ("reprojection", "reproj", 3)]


def keypoints_table(rows: list) -> str:
    cell = {(a["variant"], a["method"], a["metric"]): a for a in aggregate(rows)}
    lines = ["| keypoints (3 seeds) | " + " | ".join(c for c, _, _ in KEYPOINT_COLS) + " |", "|---|" + "---|" * len(KEYPOINT_COLS)]
    for label, variant, method in KEYPOINT_ROWS:
        vals = []
        for _, metric, d in KEYPOINT_COLS:
            a = cell.get((variant, method, metric))
            vals.append("–" if a is None else f"{a['mean']:.{d}f} ± {a['std']:.{d}f}")
        lines.append(f"| {label} | " + " | ".join(vals) + " |")
    return "\n".join(lines)


def main():
    scores = json.loads((Path(mini_zero123plus()) / "training" / "scores.json").read_text())
    print(views_table(scores), end="\n\n")
    with open(ROOT / "sweeps" / "results" / "q1_maps.csv") as f: rows = list(csv.DictReader(f))
    print(keypoints_table(rows))


if __name__ == "__main__":
    main()
