"""Seconds per discovery step of the 128 px model against the 64 px mini model, from the committed sweep results.

Each sweep run records its mean seconds per optimiser step (`s/step`, from its losses.csv). The two models ran in the
same sweeps on the same robots, with other jobs beside them on the same two cores, so read the ratio as rough.

    python bench/sweep_seconds.py
"""
import csv, statistics
from pathlib import Path

RESULTS = Path(__file__).resolve().parents[1] / "sweeps" / "results"
PAIRS = (("q19_fresh_test", "defaults", "vote128"), ("q20_rigid_test", "defaults", "rigid128"))


def seconds_per_step(sweep: str, variant: str) -> float:
    rows = [r for r in csv.DictReader(open(RESULTS / f"{sweep}.csv"))
            if r["variant"] == variant and r["method"] == "mvsk" and r["metric"] == "s/step"]
    if not rows: raise ValueError(f"{sweep}.csv holds no s/step rows for variant {variant!r}")
    return statistics.mean(float(r["value"]) for r in rows)


if __name__ == "__main__":
    print("| sweep | 64 px (s/step) | 128 px (s/step) | ratio |\n|---|---|---|---|")
    for sweep, small, large in PAIRS:
        a, b = seconds_per_step(sweep, small), seconds_per_step(sweep, large)
        print(f"| {sweep} ({small} / {large}) | {a:.2f} | {b:.2f} | {b / a:.1f}× |")
