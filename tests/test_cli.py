"The `mvsk` command as a user runs it: a subprocess, the bundled data, the mini model (every command's default) and the tiny one."
import json, os, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MVSK = [sys.executable, "-c", "from mvsk.cli import console; console()"]
SMALL = ["--n-tokens", "16", "--map-res", "16", "--n-augment", "1"]


def run(*args, cwd=ROOT):
    return subprocess.run(MVSK + [str(a) for a in args], cwd=cwd, capture_output=True, text=True, env=os.environ.copy(), timeout=600)


def last_line(r):
    return [l for l in r.stderr.splitlines() if l.strip()][-1]


def run_in_process(*args):
    "`mvsk ARGS` through `mvsk.cli.main` in this process (no interpreter start-up): (status, stdout, stderr)."
    import contextlib, io
    from mvsk.cli import main
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try: rc = main([str(a) for a in args])
        except SystemExit as e: rc = e.code                 # argparse: --help and bad flags
    return subprocess.CompletedProcess(args, rc, out.getvalue(), err.getvalue())


def test_demo_is_a_discovery_run_of_the_mini_model(tmp_path):
    out = tmp_path / "demo"
    r = run("demo", "--out", out, "--steps", "1", *SMALL)
    assert r.returncode == 0, r.stderr
    assert str(out) in r.stdout and "keypoints.csv" in r.stdout
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["discovery"]["steps"] == 1 and cfg["discovery"]["n_tokens"] == 16 and cfg["model"] == "mini"
    rows = (out / "keypoints.csv").read_text().splitlines()
    header = rows[0].split(",")
    assert {"object", "view", "x", "y", "confidence", "visible"} <= set(header)
    n_objects = len([p for p in (ROOT / "data" / "mini").iterdir() if (p / "000.png").exists()])
    objects = {r.split(",")[header.index("object")] for r in rows[1:]}
    assert len(objects) >= n_objects                 # every static object (and the sequence) got keypoints
    # the same command again refuses nothing (demo overwrites); discover refuses a non-empty folder, naming the flags
    mini = ["--data", ROOT / "data" / "mini"]                                   # discover's default model is the demo's
    r2 = run("discover", "--out", out, "--steps", "1", *mini, *SMALL)
    assert r2.returncode == 2, r2.stderr
    assert "--resume" in last_line(r2) and "--overwrite" in last_line(r2) and "resume=True" not in r2.stderr, r2.stderr
    r3 = run("discover", "--out", out, "--steps", "1", "--resume", "--lr", "0.001", *mini, *SMALL)     # other settings: refused
    assert r3.returncode == 2 and "settings differ from the checkpoint's" in last_line(r3), r3.stderr


def test_user_errors_are_one_line_and_exit_2(tmp_path):
    for args, word in [(("demo", "--data", tmp_path / "missing", "--out", tmp_path / "o"), "missing"),
                       (("demo", "--model", tmp_path / "no_model", "--out", tmp_path / "o"), "no_model"),
                       (("discover", "--n-keypoints", "99", "--n-tokens", "8", "--out", tmp_path / "o"), "--n-tokens T=8"),
                       (("discover", "--steps", "0", "--out", tmp_path / "o"), "--steps must be a positive integer"),
                       (("discover", "--resume", "--out", tmp_path / "o"), "no checkpoint to resume"),
                       (("generate", tmp_path / "none.png", "--out", tmp_path / "o"), "none.png"),
                       (("generate", ROOT / "data/sample/a1_001/000.png", "--strategy", "hierarchical", "--out", tmp_path / "o"),
                        "needs trained gates"),
                       (("eval", "--out", tmp_path / "o"), "which run?"),
                       (("frobnicate",), "unknown command")]:
        r = run_in_process(*args)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        assert word in last_line(r), r.stderr
        assert "Traceback" not in r.stderr
    assert not (tmp_path / "o").exists()
    r = run("demo", "--data", tmp_path / "missing", "--out", tmp_path / "o")    # the process itself exits with 2
    assert r.returncode == 2 and "missing" in last_line(r) and "Traceback" not in r.stderr, r.stderr


def test_other_errors_keep_their_traceback(tmp_path):
    "Only user errors become one line: a corrupt checkpoint is not one, and its traceback is shown."
    out = tmp_path / "run"; out.mkdir()
    (out / "checkpoint.pt").write_bytes(b"not a checkpoint")
    r = run("discover", "--out", out, "--resume", "--steps", "1", *SMALL)
    assert r.returncode not in (0, 2) and "Traceback" in r.stderr, (r.returncode, r.stderr[-2000:])


def test_help_for_every_command():
    assert "usage: mvsk discover" in run("discover", "--help").stdout               # through the console entry point
    for cmd in ("demo", "discover", "train", "render", "generate", "eval", "mini", "sweep", "probe", "keypoints"):
        r = run_in_process(cmd, "--help")
        assert r.returncode == 0 and "usage: mvsk " + cmd in r.stdout, (cmd, r.stderr)
        if cmd in ("generate", "eval", "train", "discover", "demo"): assert "mini" in r.stdout, cmd    # --model mini
        if cmd == "generate":                         # the help's list of strategies is every registered one
            from mvsk.fusion import STRATEGIES
            help_text = " ".join(r.stdout.split())
            assert all(name in help_text.split("fusion strategy:")[1] for name in STRATEGIES), help_text


def test_the_default_model_is_the_shipped_mini_model(tmp_path):
    "No --model: the trained mini model the package ships (mvsk.models.mini_zero123plus()'s folder), never the random tiny one; tiny only when named; the help says so."
    import numpy as np
    from PIL import Image
    from mvsk.models import mini_zero123plus
    image = ROOT / "data" / "sample" / "a1_001" / "000.png"
    grids = {}
    for name, flags in (("default", []), ("folder", ["--model", mini_zero123plus()]), ("tiny", ["--model", "tiny"])):
        r = run_in_process("generate", image, "--out", tmp_path / name, "--steps", "2", *flags)
        assert r.returncode == 0, (name, r.stderr)
        grids[name] = np.asarray(Image.open(tmp_path / name / "grid.png"))
    assert json.loads((tmp_path / "default" / "config.json").read_text())["model"] == "mini"
    assert np.array_equal(grids["default"], grids["folder"]), "no --model must generate what the shipped mini folder generates"
    assert grids["default"].shape[:2] == (3 * 64, 2 * 64) and grids["tiny"].shape[:2] == (3 * 128, 2 * 128), \
        (grids["default"].shape, grids["tiny"].shape)     # the mini model's 64 px views; tiny's 128 px only with --model tiny
    for cmd, says in (("demo", "default mini"), ("discover", "default mini"), ("train", "default mini"),
                      ("generate", "default: the run's, else mini"), ("eval", "default: the run's"),
                      ("probe", "default mini"), ("keypoints", "default mini")):
        r = run_in_process(cmd, "--help")
        text = " ".join(r.stdout.split())
        model_help = text.split("--model MODEL ")[-1].split(" --")[0]       # the option's help, not the usage line
        assert r.returncode == 0 and says in model_help and "'tiny' (random weights" in model_help, (cmd, model_help)


def test_every_command_end_to_end(tmp_path):
    "render -> discover -> eval -> train (fresh tokens) -> generate and eval with everything the training run wrote; the first three as a user starts them (a new process each), the rest in this process."
    data, run_dir, train_dir = tmp_path / "data", tmp_path / "run", tmp_path / "train"
    r = run("render", "--out", data, "--n-objects", "2", "--size", "128", "--seed", "1", "--robots", "quadrupeds", "--no-progress")
    assert r.returncode == 0, r.stderr
    assert len([p for p in data.iterdir() if p.is_dir()]) == 2
    r = run("discover", "--data", data, "--out", run_dir, "--steps", "2", *SMALL)
    assert r.returncode == 0, r.stderr
    assert json.loads((run_dir / "config.json").read_text())["model"] == "mini"     # no --model: the shipped mini model
    r = run("eval", run_dir, "--data", data, "--strategies", "none,spatial", "--steps", "1", "--n-objects", "1", "--by-part")
    assert r.returncode == 0, r.stderr
    report = (run_dir / "report.md").read_text()
    assert "| oracle |" in report and "mvsk (run)" in report and "| 3D-consistent points |" in report
    assert "| found@0.1 foot |" in report.split("### By part")[1]                   # --by-part: the parts' own table
    assert "| spatial |" in (run_dir / "strategies.md").read_text()

    r = run_in_process("train", "--data", data, "--out", train_dir, "--steps", "1", "--batch-size", "1", "--n-augment", "1")
    assert r.returncode == 0, r.stderr
    for f in ("checkpoint.pt", "gates.safetensors", "tokens.safetensors", "keypoints.csv", "keypoints3d.json"):
        assert (train_dir / f).is_file(), f
    from mvsk.unet import KeypointTokens
    selected = KeypointTokens.load(train_dir / "tokens.safetensors").selected.tolist()
    assert len(selected) == 8, selected                  # fresh tokens, and still a selection (the mini model's default K)
    assert json.loads((train_dir / "config.json").read_text())["model"] == "mini"

    obj = sorted(p for p in data.iterdir() if p.is_dir())[0]
    r = run_in_process("generate", obj / "000.png", "--out", tmp_path / "gen", "--steps", "2", "--strategy", "hierarchical",
            "--run", train_dir, "--guidance-every", "1")
    assert r.returncode == 0, r.stderr
    kp = json.loads((tmp_path / "gen" / "keypoints.json").read_text())
    assert kp["tokens"] == selected and len(kp["xy"]) == 6
    gen_cfg = json.loads((tmp_path / "gen" / "config.json").read_text())
    assert gen_cfg["gates"] is True and gen_cfg["model"] == "mini" and gen_cfg["run"] == str(train_dir)
    r = run_in_process("eval", "--run", train_dir, "--data", data, "--strategies", "none,hierarchical", "--steps", "1", "--n-objects", "1")
    assert r.returncode == 0, r.stderr
    assert "| hierarchical |" in (train_dir / "strategies.md").read_text() and "trained gates" in (train_dir / "strategies.md").read_text()

    # refused, in this process as the other user errors are (a subprocess's exit status 2 is tested above): a strategy
    # that needs trained gates with a discovery run (no gates); a run of another model
    r = run_in_process("generate", obj / "000.png", "--out", tmp_path / "g2", "--strategy", "hierarchical", "--run", run_dir)
    assert r.returncode == 2 and "needs trained gates" in last_line(r), r.stderr
    r = run_in_process("eval", "--run", run_dir, "--data", data, "--strategies", "none,hierarchical", "--steps", "1")
    assert r.returncode == 2 and "need trained gates" in last_line(r), r.stderr
    r = run_in_process("generate", obj / "000.png", "--out", tmp_path / "g2", "--run", train_dir, "--model", "tiny")
    assert r.returncode == 2 and "made with --model mini, not --model tiny" in last_line(r), r.stderr
    assert not (tmp_path / "g2").exists()


def test_keypoints_on_generated_views(tmp_path):
    "generate -> discover on the generated views -> eval without ground truth; and on grids laid out as Zero123++'s pipeline writes them (in this process: the command's process boundary is tested above)."
    from PIL import Image
    grids, flat = tmp_path / "generated", tmp_path / "zero123plus"
    for name in ("laikago_000", "a1_001"):
        r = run_in_process("generate", ROOT / "data" / "sample" / name / "000.png", "--out", grids / name, "--steps", "2")
        assert r.returncode == 0, r.stderr
    flat.mkdir()
    for name in ("laikago_000", "a1_001"):                # one 960x640 grid per object beside its 320 px condition image
        Image.open(grids / name / "grid.png").resize((640, 960), Image.BICUBIC).save(flat / f"{name}.png")
        Image.open(grids / name / "cond.png").resize((320, 320), Image.BICUBIC).save(flat / f"{name}_cond.png")
    from mvsk.cameras import zero123plus_cameras
    for folder in (grids, flat):
        out = tmp_path / f"run_{folder.name}"
        r = run_in_process("discover", "--data", folder, "--out", out, "--steps", "1", *SMALL)
        assert r.returncode == 0, r.stderr
        assert json.loads((out / "config.json").read_text())["objects"] == ["a1_001", "laikago_000"]
        doc = json.loads((out / "keypoints3d.json").read_text())
        from mvsk.cameras import Cameras
        import torch
        rig = zero123plus_cameras("v1.2", include_condition=True)
        assert all(torch.allclose(Cameras.from_dict(o["cameras"]).P, rig.P, atol=1e-5) for o in doc["objects"])
        r = run_in_process("eval", out, "--data", folder)
        assert r.returncode == 0, r.stderr
        assert "agree@0.05" in r.stdout and "no ground truth" in r.stdout, r.stdout
        report = (out / "report.md").read_text()
        assert "| 3D-consistent points |" in report and "| random (tile) |" in report and "With ground truth" not in report
