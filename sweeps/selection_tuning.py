"""Which K tokens to keep: StableKeypoints' frequent choice, the rigid choice at several distances, and random tokens
kept as far apart (the spread alone), on the tokens of finished discovery runs.

Every token of a run is extracted once with the run's own settings and draws (`select_and_extract` keeping all T
tokens: a token's keypoints do not depend on which others are kept). Then each choice keeps K of them:
- `frequent`: the run's own tokens (StableKeypoints' choice, when the run used it);
- `rigid D`: `rigid_tokens` with min_distance D (a distance no K tokens satisfy is left out, with a note);
- `spread D`: K tokens drawn at random among those located on >= 90 % of the objects, each at least D from the
  others on average (the mean over `--draws` draws): what keeping tokens apart buys without asking them to keep
  their distances.
Each choice is scored with `report` against the objects' ground truth (by part, the floors beside it; each view
weighted by its map's confidence, as `mvsk eval` does). One row per (run, choice, metric): `choice` is a choice's
name (a spread's draws as `spread D #i`, averaged where the results are read) or one of `report`'s reference rows
(the floors, the oracle). The extractions are cached (`--cache`), so the scoring can be repeated cheaply.

    python sweeps/selection_tuning.py outputs/sweeps/q14_vote/runs/vote-seed{0,1,2} \\
        outputs/sweeps/q14_vote/runs/random_weights_vote-seed{0,1,2} outputs/sweeps/q17_vote128/runs/maps32-seed{0,1,2} \\
        --data outputs/mini-heldout --cache outputs/selection_tuning --out sweeps/results/selection_tuning.csv
"""
import argparse, csv, json, logging, tempfile
from pathlib import Path

import torch

from mvsk.commands import model_for
from mvsk.data import load_views
from mvsk.discovery import DiscoveryConfig, as_units, discovery_datasets, _encode_conditions, select_and_extract
from mvsk.eval import report, read_view_masks
from mvsk.keypoints import rigid_tokens


def every_token(run: Path, data: str) -> list:
    "-> [{object, xy (7, T, 2), confidence (7, T), points (T, 3)}] every token's keypoints on every object, as the run extracts them."
    net, _, _ = model_for(run=run)
    cfg = DiscoveryConfig.from_dict(json.loads((run / "config.json").read_text())["discovery"])
    units = as_units(discovery_datasets(data, view_size=net.components.view_size))
    cond = _encode_conditions(net, units, cfg.seed, False)
    with tempfile.TemporaryDirectory() as tmp:
        res = select_and_extract(net, units, cond, cfg, Path(tmp), logging.getLogger("selection_tuning"), False,
                                 keep=list(range(net.tokens.n_tokens)))
    return [{k: r[k] for k in ("object", "xy", "confidence", "points")} for r in res["keypoints"]]


def spread_tokens(mean: torch.Tensor, located: torch.Tensor, k: int, distance: float, g: torch.Generator) -> list:
    "(T, T) mean distances (rigid_tokens') + (T,) bool tokens located often enough -> K tokens in random order, each kept if it lies at least `distance` from every kept one on average."
    kept = []
    for t in torch.randperm(len(mean), generator=g).tolist():
        if located[t] and all(mean[t, c] >= distance for c in kept): kept.append(t)
        if len(kept) == k: return kept
    raise ValueError(f"a draw found only {len(kept)} tokens {distance} apart; k={k}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", help="finished discovery run directories (all on --data)")
    ap.add_argument("--data", required=True, help="the objects the runs were made on, with ground truth")
    ap.add_argument("--distances", type=float, nargs="+", default=[0.1, 0.15, 0.2, 0.25, 0.3])
    ap.add_argument("--spread", type=float, nargs="+", default=[0.15, 0.2, 0.25], help="distances of the random spread choice")
    ap.add_argument("--draws", type=int, default=10, help="random spread draws per distance (default 10)")
    ap.add_argument("--cache", required=True, help="folder of the extractions (written once per run)")
    ap.add_argument("--out", required=True, help="CSV to write")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    cache, rows = Path(a.cache), []
    cache.mkdir(parents=True, exist_ok=True)
    for run in map(Path, a.runs):
        f = cache / f"{Path(a.data).name}-{run.parent.parent.name}-{run.name}.pt"
        if not f.is_file(): torch.save(every_token(run, a.data), f)
        res = sorted(torch.load(f, weights_only=False), key=lambda r: r["object"])
        names, P = [r["object"] for r in res], torch.stack([r["points"] for r in res])
        xy = torch.stack([r["xy"][1:] for r in res])                             # (B, 6, T, 2): the six target views
        conf = torch.stack([r["confidence"][1:] for r in res])                   # (B, 6, T)
        own = json.loads((run / "summary.json").read_text())["tokens"]
        K = len(own)
        choices = {"frequent": own}
        for d in a.distances:
            try: choices[f"rigid {d}"] = rigid_tokens(P, K, d)["tokens"].tolist()
            except ValueError as e: print(f"{run}: rigid {d} left out: {e}")
        g = torch.Generator().manual_seed(0)
        mean = rigid_tokens(P, 2, 0.0)["mean"]                                   # the pairs' mean distances, once per run
        located = (~P.isnan().any(-1)).float().mean(0) >= 0.9                    # rigid_tokens' min_located
        draws = {}
        for d in a.spread:
            try: draws[f"spread {d}"] = [spread_tokens(mean, located, K, d, g) for _ in range(a.draws)]
            except ValueError as e: print(f"{run}: spread {d} left out: {e}")
        items = [load_views(Path(a.data) / n) for n in names]
        masks = [read_view_masks(Path(a.data) / n) for n in names]
        preds = {c: dict(xy=xy[:, :, t], weights=conf[:, :, t]) for c, t in choices.items()}
        preds.update({f"{c} #{i}": dict(xy=xy[:, :, t], weights=conf[:, :, t]) for c, ts in draws.items() for i, t in enumerate(ts)})
        for r in report(items, masks, preds=preds, k=K, seed=0, n_random=30, reproject=True, by_part=True):
            for metric, v in r.items():
                if metric in ("method", "K") or v is None or isinstance(v, str): continue
                rows.append(dict(run=f"{run.parent.parent.name}/{run.name}", choice=r["method"], metric=metric, value=float(v)))
        print(f"{run}: " + "; ".join(f"{c} {t}" for c, t in choices.items()), flush=True)
    with open(a.out, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["run", "choice", "metric", "value"]); w.writeheader(); w.writerows(rows)


if __name__ == "__main__":
    main()
