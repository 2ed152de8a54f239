"`mvsk keypoints` end to end: a picture and a folder of pictures, the files it writes, and the one-line refusals."
import csv, json, os, subprocess, sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
# A discovery run's keypoints.csv columns, as the README documents them (written out here, not read from the code).
DISCOVERY_COLUMNS = ["object", "frame", "view", "keypoint", "token", "x", "y", "confidence", "visibility", "visible", "view_x", "view_y"]
# `mvsk keypoints ARGS` as a user runs it: through `mvsk.cli.main` once the command is registered there; until then
# the same handling of UserError as `main` (one line on stderr, exit status 2) around `keypoints_main`.
CLI = """
import sys
from mvsk.cli import main, COMMANDS
from mvsk.commands import UserError
from mvsk.picture import keypoints_main
argv = sys.argv[1:]
if "keypoints" in COMMANDS: sys.exit(main(["keypoints", *argv]))
try: keypoints_main(argv)
except UserError as e:
    print(f"mvsk keypoints: error: {e}", file=sys.stderr); sys.exit(2)
"""


def run(*args):
    return subprocess.run([sys.executable, "-c", CLI, *map(str, args)], cwd=ROOT, capture_output=True, text=True,
                          env=os.environ.copy(), timeout=600)


@pytest.fixture(scope="module")
def tiny_tokens(tmp_path_factory):
    "A tokens file made for the tiny model, with 5 keypoint tokens selected and small extraction settings in its metadata."
    import torch
    from mvsk.models import load_zero123plus, tiny_zero123plus
    from mvsk.unet import KeypointTokens
    from mvsk.discovery import demo_config
    comp = load_zero123plus(tiny_zero123plus())
    tok = KeypointTokens(16, comp.unet.config.cross_attention_dim, seed=3).select([1, 4, 6, 10, 15])
    path = tmp_path_factory.mktemp("tokens") / "tokens.safetensors"
    cfg = demo_config(n_tokens=16, n_keypoints=5, map_res=16, n_augment=2)
    tok.save(path, metadata={"model": "tiny", "config": cfg.to_dict()})
    return path


def project_np(X, cams):
    "(K, 3) world points + a keypoints3d.json camera dict -> (V, K, 2) normalised (x, y): K [R X + t], divided by depth."
    R, t, K = (np.array(cams[k], dtype=np.float64) for k in ("R", "t", "K"))
    cam = np.einsum("vij,kj->vki", R, X) + t[:, None]
    uvw = np.einsum("vij,vkj->vki", K, cam)
    return uvw[..., :2] / uvw[..., 2:]


def check_picture_folder(folder: Path, K: int):
    "Every file of one picture opens, and its numbers agree with each other."
    for name in ["grid.png", "cond.png", "overlay.png", "keypoints3d.png", *[f"view_{v}.png" for v in range(6)]]:
        Image.open(folder / name).load()
    grid, view = Image.open(folder / "grid.png"), Image.open(folder / "view_3.png")
    S = view.size[0]
    assert grid.size == (2 * S, 3 * S)
    assert np.array_equal(np.asarray(grid.convert("RGB"))[S:2 * S, S:], np.asarray(view.convert("RGB")))   # view 3: row 1, col 1
    gif = Image.open(folder / "keypoints.gif")
    assert gif.n_frames == 7                                     # the picture and its six views
    with open(folder / "keypoints.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == DISCOVERY_COLUMNS
    assert len(rows) == 7 * K and {r["view"] for r in rows} == {"cond", *map(str, range(6))}
    xy = np.array([[float(r["x"]), float(r["y"])] for r in rows]).reshape(7, K, 2)
    assert ((xy >= 0) & (xy <= 1)).all()
    doc = json.loads((folder / "keypoints3d.json").read_text())
    obj = doc["objects"][0]
    tri = [k for k, p in enumerate(obj["points"]) if p is not None]
    assert tri == [k for k, t in enumerate(obj["triangulated"]) if t]
    # the residuals in the file are the distances of each view's own keypoint (view_x, view_y) to the file's points,
    # projected by its cameras; the keypoints (x, y) are those projections where voted on, the views' own ones otherwise
    own = np.array([[float(r["view_x"]), float(r["view_y"])] for r in rows]).reshape(7, K, 2)
    if tri:
        X = np.array([obj["points"][k] for k in tri])
        proj = project_np(X, obj["cameras"])
        res = np.linalg.norm(proj - own[:, tri], axis=-1)
        assert np.allclose(res, np.array(obj["residual"], dtype=float)[:, tri], atol=1e-4)
        assert np.allclose(xy[:, tri], proj, atol=1e-4) or np.allclose(xy, own, atol=1e-6)
    # the PLY: a header a viewer parses, then one vertex per triangulated point, at the file's coordinates
    lines = (folder / "keypoints3d.ply").read_text().splitlines()
    assert lines[:2] == ["ply", "format ascii 1.0"]
    end = lines.index("end_header")
    n = [int(l.split()[2]) for l in lines[:end] if l.startswith("element vertex")]
    props = [l.split()[-1] for l in lines[:end] if l.startswith("property")]
    assert n == [len(tri)] and props[:3] == ["x", "y", "z"]
    verts = [l.split() for l in lines[end + 1:]]
    assert len(verts) == len(tri) and all(len(v) == len(props) for v in verts)
    if tri:
        assert np.allclose(np.array([[float(c) for c in v[:3]] for v in verts]), X, atol=1e-5)
        assert [int(v[props.index("keypoint")]) for v in verts] == tri
    return xy, doc


def test_a_picture_and_a_folder_on_the_tiny_model(tmp_path, tiny_tokens):
    from mvsk.picture import keypoints_main
    pics = tmp_path / "pics"; pics.mkdir()
    for o in ("a1_001", "laikago_000"): Image.open(ROOT / f"data/sample/{o}/000.png").save(pics / f"{o}.png")
    common = ["--model", "tiny", "--tokens", str(tiny_tokens), "--steps", "2"]
    one = keypoints_main([str(ROOT / "data/sample/a1_001/000.png"), "--out", str(tmp_path / "one"), *common])
    both = keypoints_main([str(pics), "--out", str(tmp_path / "both"), *common])
    assert [r.name for r, _ in one] == ["000"] and [r.name for r, _ in both] == ["a1_001", "laikago_000"]
    for r, folder in one + both:
        xy, doc = check_picture_folder(folder, 5)
        assert np.allclose(xy, r.xy.numpy(), atol=1e-6)
        assert doc["tokens"] == [1, 4, 6, 10, 15]
    # the same picture, the same seed: the same keypoints whether it came alone or from a folder
    assert np.allclose(one[0][0].xy.numpy(), both[0][0].xy.numpy())
    # keypoint-guided sampling: recorded, and the views it generates are not plain Zero123++'s
    guided = keypoints_main([str(ROOT / "data/sample/a1_001/000.png"), "--out", str(tmp_path / "guided"), *common,
                             "--guided", "spatial", "--strength", "1.0"])
    folder = guided[0][1]
    assert json.loads((folder / "config.json").read_text())["generation"]["strategy"] == "spatial"
    plain = np.asarray(Image.open(one[0][1] / "grid.png"), dtype=float)
    assert np.array_equal(np.asarray(Image.open(both[0][1] / "grid.png"), dtype=float), plain)     # plain twice: the same
    assert np.abs(np.asarray(Image.open(folder / "grid.png"), dtype=float) - plain).mean() > 0.1    # guided: other views
    check_picture_folder(folder, 5)


def test_the_mini_model_works_out_of_the_box(tmp_path):
    "No --model, --run or --tokens: the mini model and its shipped tokens, as a user runs the command."
    r = run(ROOT / "data/mini/laikago_001/000.png", ROOT / "data/mini/laikago_002/000.png", "--out", tmp_path)
    assert r.returncode == 0, r.stderr
    lines = [l for l in r.stdout.splitlines() if l.startswith("mvsk keypoints:")]
    names = ["laikago_001_000", "laikago_002_000"]          # two pictures named 000.png: their folders tell them apart
    assert len(lines) == 2 and all(f"{n}: 8 keypoints" in l for n, l in zip(names, lines)), r.stdout
    for n in names:
        cfg = json.loads((tmp_path / n / "config.json").read_text())
        assert cfg["model"] == "mini" and cfg["tokens"].endswith("mini-zero123plus/keypoints.safetensors")
        assert cfg["generation"]["num_inference_steps"] == 25 and cfg["generation"]["guidance_scale"] == 2.0
        assert Image.open(tmp_path / n / "view_0.png").size == (64, 64)
        check_picture_folder(tmp_path / n, 8)


def test_refusals_are_one_line(tmp_path, tiny_tokens):
    from mvsk.commands import UserError
    from mvsk.picture import keypoints_main
    pic = ROOT / "data/sample/a1_001/000.png"
    Image.new("RGB", (96, 64), "gray").save(tmp_path / "wide.png")
    (tmp_path / "empty").mkdir()
    cases = [((tmp_path / "none.png",), f"picture {tmp_path / 'none.png'} does not exist"),
             ((tmp_path / "wide.png",), "must be square"),
             ((tmp_path / "empty",), "holds no pictures"),
             ((ROOT / "data/sample/laikago_000/000.png", ROOT / "data/mini/laikago_000/000.png"),
              "two pictures share the name(s) ['laikago_000_000']"),
             ((pic, "--tokens", tiny_tokens), "was made with --model tiny, not --model mini"),
             ((pic, "--model", "tiny"), "--model tiny ships no keypoint tokens: pass --run RUN"),
             ((pic, "--run", tmp_path, "--tokens", tiny_tokens), "pass --run or --tokens, not both"),
             ((pic, "--run", tmp_path / "norun"), "does not exist"),
             ((pic, "--guided", "hierarchical"), "needs trained gates"),
             ((pic, "--guided", "sideways"), "unknown fusion strategy 'sideways'"),
             ((pic, "--model", "tiny", "--tokens", tiny_tokens, "--steps", "0"), "--steps must be an integer >= 1")]
    for args, words in cases:
        with pytest.raises(UserError) as e:
            keypoints_main([*map(str, args), "--out", str(tmp_path / "o")])
        assert words in str(e.value) and "\n" not in str(e.value), (args, str(e.value))
    assert not (tmp_path / "o").exists()                          # nothing was written for a refused command
    r = run(pic, "--tokens", tiny_tokens, "--out", tmp_path / "o")     # the command line: one line, status 2
    err = [l for l in r.stderr.splitlines() if l.strip()]
    assert r.returncode == 2 and len(err) == 1 and "--model tiny" in err[0] and "--model mini" in err[0], r.stderr


def test_a_discovery_run_brings_its_model_tokens_and_settings(tmp_path):
    from mvsk.commands import discover_cmd, UserError
    from mvsk.picture import keypoints_main
    run_dir = tmp_path / "run"
    discover_cmd(ROOT / "data/sample", run_dir, "tiny", progress=False, steps=1, n_tokens=16, n_keypoints=4, map_res=16,
                 n_augment=1)
    (r, folder), = keypoints_main([str(ROOT / "data/sample/a1_001/000.png"), "--run", str(run_dir), "--steps", "2",
                                   "--out", str(tmp_path / "out")])
    with open(run_dir / "keypoints.csv", newline="") as f: run_header = next(csv.reader(f))
    with open(folder / "keypoints.csv", newline="") as f: header = next(csv.reader(f))
    assert header == run_header == DISCOVERY_COLUMNS              # the columns of the run's own keypoints.csv
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["model"] == "tiny" and cfg["extraction"]["map_res"] == 16 and cfg["extraction"]["n_augment"] == 1
    run_tokens = json.loads((run_dir / "keypoints3d.json").read_text())["tokens"]
    assert r.tokens.tolist() == run_tokens and json.loads((folder / "keypoints3d.json").read_text())["tokens"] == run_tokens
    check_picture_folder(folder, 4)
    with pytest.raises(UserError) as e:                           # a run of another model: refused, naming both
        keypoints_main([str(ROOT / "data/sample/a1_001/000.png"), "--run", str(run_dir), "--model", "mini", "--out", str(tmp_path / "o")])
    assert "--model tiny" in str(e.value) and "--model mini" in str(e.value) and "\n" not in str(e.value)
