"`mvsk probe` end to end on the tiny model and the bundled sample: the files it writes, what they hold, and a refusal."
import csv, json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_probe_main_writes_tables_and_figure(tmp_path):
    from mvsk.probe import probe_main
    objs = ["a1_001", "laikago_000"]
    out = tmp_path / "probe"
    res = probe_main(["--model", "tiny", "--data", str(ROOT / "data" / "sample"), "--objects", *objs, "--timesteps", "0",
                      "--layers", "up_blocks.1.attentions.0", "up_blocks.2.attentions.0", "--out", str(out), "--no-progress"])
    for name in ("probe.csv", "probe.md", "probe.png", "probe.json"): assert (out / name).is_file(), name
    rows = list(csv.DictReader(open(out / "probe.csv")))
    # the model and random weights at both layers, RGB at both grids and full size, a random object point
    got = {(r["source"], r["layer"], r["timestep"]) for r in rows}
    assert got == {("model", "up_blocks.1.attentions.0", "0"), ("model", "up_blocks.2.attentions.0", "0"),
                   ("random weights", "up_blocks.1.attentions.0", "0"), ("random weights", "up_blocks.2.attentions.0", "0"),
                   ("rgb", "up_blocks.1.attentions.0", ""), ("rgb", "up_blocks.2.attentions.0", ""), ("rgb", "pixels", ""),
                   ("random object point", "mask", "")}
    # every row scores the pairs the ground truth implies: (view a != view b, keypoint visible in both), summed over objects
    pairs = 0
    for o in objs:
        vis = json.loads((ROOT / "data" / "sample" / o / "keypoints.json").read_text())["visible"][1:]
        pairs += sum(sum(x and y for x, y in zip(vis[a], vis[b])) for a in range(6) for b in range(6) if a != b)
    assert {int(r["pairs"]) for r in rows} == {pairs}
    for r in rows: assert 0 <= float(r["pck@0.05"]) <= float(r["pck@0.1"]) <= 1
    # the tiny model's views are 128 px with an 8x VAE: 16x16 latents, 4x4 at up_blocks.1, 8x8 at up_blocks.2
    grids = {r["layer"]: r["grid"] for r in rows if r["source"] == "model"}
    assert grids == {"up_blocks.1.attentions.0": "4x4", "up_blocks.2.attentions.0": "8x8"}
    md = (out / "probe.md").read_text()
    assert "## PCK@0.1" in md and "model t=0" in md and "random weights t=0" in md and "rgb (pixels)" in md
    cfg = json.loads((out / "probe.json").read_text())
    assert cfg["model"] == "tiny" and cfg["timesteps"] == [0] and cfg["objects"] == objs
    assert len(res["matching"]) == len(rows)


def test_probe_refuses_an_unknown_layer_in_one_line(tmp_path):
    from mvsk.commands import UserError
    from mvsk.probe import probe_main
    with pytest.raises(UserError) as e:
        probe_main(["--model", "tiny", "--data", str(ROOT / "data" / "sample"), "--layers", "up_blocks.9.attentions.0",
                    "--out", str(tmp_path / "o"), "--no-progress"])
    msg = str(e.value)
    assert "\n" not in msg and "--layers ['up_blocks.9.attentions.0']" in msg and "up_blocks.1.attentions.0" in msg
    assert not (tmp_path / "o").exists()
