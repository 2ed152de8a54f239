"""How far a discovery run's keypoints move from one draw of the extraction's randomness to another.

The extraction of a run's selected tokens (`mvsk.picture.unit_keypoints`, with the run's settings) is repeated with
two seeds: the seed draws the test-time augmentations, the noise of the keypoint pass and the condition latent's
sample, and nothing else changes. For each (object, view, keypoint) of the six target views the distance between
the two draws is measured, for each view's own keypoint (extraction "views") and for the keypoint voted on in 3D
(extraction "vote"; both come from the same maps). One row per (run, n_augment, extraction): the median distance and
the shares moved by more than 0.05 and 0.1 of the tile (PCK's thresholds).

    python sweeps/extraction_draws.py outputs/sweeps/q14_vote/runs/views-seed{0,1,2} --data outputs/mini-heldout \\
        --n-augment 10 --out sweeps/results/extraction_draws.csv
"""
import argparse, csv, dataclasses, sys
from pathlib import Path

import torch

from mvsk.discovery import as_units, discovery_datasets
from mvsk.picture import picture_model, unit_keypoints


def draw(net, units, cfg) -> dict:
    "-> {'views': (B, 6, K, 2), 'vote': (B, 6, K, 2)} the six target views' keypoints of every unit under cfg.seed."
    out = [unit_keypoints(net, units[i], cfg) for i in range(len(units))]
    return {"views": torch.stack([o["view_xy"][1:] for o in out]), "vote": torch.stack([o["xy"][1:] for o in out])}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", help="discovery run directories")
    ap.add_argument("--data", required=True, help="the objects the runs were made on")
    ap.add_argument("--n-augment", type=int, nargs="+", default=[10], help="test-time augmentations to compare (default 10)")
    ap.add_argument("--second-seed", type=int, default=1000, help="the second draw's seed offset from the run's seed")
    ap.add_argument("--out", required=True, help="CSV to write")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    rows = []
    for run in map(Path, a.runs):
        net, _, _, settings, _ = picture_model(run=run)                  # the run's model, tokens and settings
        units = as_units(discovery_datasets(a.data, view_size=net.components.view_size))
        for n in a.n_augment:
            cfg = dataclasses.replace(settings, n_augment=n, extraction="vote")
            one, two = draw(net, units, cfg), draw(net, units, dataclasses.replace(cfg, seed=cfg.seed + a.second_seed))
            for how in ("views", "vote"):
                d = (one[how] - two[how]).norm(dim=-1).flatten()
                rows.append(dict(run=run.name, n_augment=n, extraction=how, keypoints=len(d), median=round(float(d.median()), 4),
                                 moved_005=round(float((d > 0.05).float().mean()), 4), moved_01=round(float((d > 0.1).float().mean()), 4)))
                print(rows[-1], flush=True)
    with open(a.out, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0])); w.writeheader(); w.writerows(rows)


if __name__ == "__main__":
    sys.exit(main())
