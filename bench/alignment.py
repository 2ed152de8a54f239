"""Time of `mvsk.eval.dual_alignment`, which counts every (pair of instances, token) at once, against the same count
taken pair by pair and token by token in Python (as 0.9.4 counted labels, written out here with the part
choice added), measured side by side in one
process on synthetic laikago-like instances (17 labels, six views, K tokens). The two must agree exactly; the
script checks it. `report` calls it once per row and twice with `by_part` (labels and parts), and the random floors'
rows are means over 30 draws, so a report on B robots calls it about 2 × 95 times.

    .venv/bin/python bench/alignment.py                     # B = 20 and 60 robots, K = 8 and 16
    .venv/bin/python bench/alignment.py --robots 20 --k 8 --rounds 5
"""
import argparse, statistics, time

import torch

from mvsk.eval import dual_alignment, match_keypoints, part_of

LABELS = ["base"] + [f"{s}_{p}" for s in ("FR", "FL", "RR", "RL") for p in ("abduct", "hip", "knee", "foot")]


def loop_alignment(xy, gt, labels, alpha=0.1, part=None):
    "dual_alignment's (score, label agreement, pairs), one (i, j, token) at a time."
    B = xy.shape[0]
    match, name = match_keypoints(xy, gt), (part or (lambda l: l))
    tag = [{int(match[b, n]): name(l) for n, l in enumerate(labels[b]) if match[b, n] >= 0} for b in range(B)]
    groups = [tuple(sorted(l)) for l in labels]
    hit = tot = agree = both = pairs = 0
    for i in range(B):
        for j in range(B):
            if i == j or groups[i] != groups[j]: continue
            pairs += 1
            for k, lab in tag[i].items():
                if k in tag[j]: both += 1; agree += tag[j][k] == lab
                ns = [n for n, l in enumerate(labels[j]) if name(l) == lab]
                if not ns: continue
                def cost(n):
                    v = gt["visible"][j, :, n]
                    return float((xy[j, v, k] - gt["xy"][j, v, n]).norm(dim=-1).mean()) if v.any() else float("inf")
                n = min(ns, key=cost)
                v = gt["visible"][j, :, n]
                hit += int(((xy[j, :, k] - gt["xy"][j, :, n]).norm(dim=-1)[v] <= alpha).sum()); tot += int(v.sum())
    return hit / tot, agree / both, pairs


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--robots", type=int, nargs="+", default=[20, 60])
    ap.add_argument("--k", type=int, nargs="+", default=[8, 16])
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    torch.set_num_threads(1)
    print("| robots | K | score | pair by pair (s, median) | at once (s, median) | ratio |\n|---|---|---|---|---|---|")
    for B in a.robots:
        for K in a.k:
            g = torch.Generator().manual_seed(B * 100 + K)
            gt = {"xy": torch.rand(B, 6, len(LABELS), 2, generator=g), "visible": torch.rand(B, 6, len(LABELS), generator=g) > 0.3}
            xy = (gt["xy"][:, :, torch.randint(len(LABELS), (K,), generator=g)] + 0.05 * torch.randn(B, 6, K, 2, generator=g))
            labels = [LABELS] * B
            for what, part in (("labels", None), ("parts", part_of)):
                loop_t, fast_t = [], []
                for _ in range(a.rounds):                       # round-robin: a load change hits both alike
                    t = time.perf_counter(); ref = loop_alignment(xy, gt, labels, part=part); loop_t.append(time.perf_counter() - t)
                    t = time.perf_counter(); got = dual_alignment(xy, gt, labels, part=part); fast_t.append(time.perf_counter() - t)
                if (got["score"], got["label_agreement"], got["pairs"]) != ref:
                    raise SystemExit(f"the two counts differ at B={B}, K={K}, {what}: {got} against {ref}")
                lm, fm = statistics.median(loop_t), statistics.median(fast_t)
                print(f"| {B} | {K} | {what} | {lm:.3f} | {fm:.4f} | {lm / fm:.0f}× |")


if __name__ == "__main__":
    main()
