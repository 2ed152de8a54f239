"The `mvsk` command as a user runs it: a subprocess, the bundled sample, the tiny model."
import json, os, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MVSK = [sys.executable, "-c", "from mvsk.cli import console; console()"]


def run(*args, cwd=ROOT):
    return subprocess.run(MVSK + list(args), cwd=cwd, capture_output=True, text=True, env=os.environ.copy(), timeout=600)


def test_demo_is_a_discovery_run_on_the_sample(tmp_path):
    out = tmp_path / "demo"
    r = run("demo", "--out", str(out), "--steps", "1", "--n-tokens", "16", "--map-res", "16", "--n-augment", "1")
    assert r.returncode == 0, r.stderr
    assert str(out) in r.stdout and "keypoints.csv" in r.stdout
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["discovery"]["steps"] == 1 and cfg["discovery"]["n_tokens"] == 16 and cfg["model"] == "tiny"
    rows = (out / "keypoints.csv").read_text().splitlines()
    header = rows[0].split(",")
    assert {"object", "view", "x", "y", "confidence", "visible"} <= set(header)
    n_objects = len([p for p in (ROOT / "data" / "sample").iterdir() if (p / "000.png").exists()])
    objects = {r.split(",")[header.index("object")] for r in rows[1:]}
    assert len(objects) >= n_objects                 # every static object (and the sequence) got keypoints
    # the same command again refuses nothing (demo overwrites); discover refuses a non-empty folder
    r2 = run("discover", "--out", str(out), "--steps", "1", "--n-tokens", "16", "--map-res", "16", "--n-augment", "1")
    assert r2.returncode == 2 and "--overwrite" in r2.stderr or "resume" in r2.stderr, r2.stderr


def test_user_errors_are_one_line_and_exit_2(tmp_path):
    for args, word in [(("demo", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "o")), "missing"),
                       (("demo", "--model", str(tmp_path / "no_model"), "--out", str(tmp_path / "o")), "no_model"),
                       (("discover", "--n-keypoints", "99", "--n-tokens", "8", "--out", str(tmp_path / "o")), "8"),
                       (("generate", str(tmp_path / "none.png"), "--out", str(tmp_path / "o")), "none.png"),
                       (("frobnicate",), "unknown command")]:
        r = run(*args)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        last = [l for l in r.stderr.splitlines() if l.strip()][-1]
        assert word in last, r.stderr
        assert "Traceback" not in r.stderr
    assert not (tmp_path / "o").exists()


def test_help_for_every_command():
    for cmd in ("demo", "discover", "train", "render", "generate", "eval"):
        r = run(cmd, "--help")
        assert r.returncode == 0 and "usage: mvsk " + cmd in r.stdout
        if cmd == "generate":                         # the help's list of strategies is every registered one
            from mvsk.fusion import STRATEGIES
            help_text = " ".join(r.stdout.split())
            assert all(name in help_text.split("fusion strategy:")[1] for name in STRATEGIES), help_text


def test_every_command_end_to_end(tmp_path):
    "render -> discover -> eval -> train (from the discovered tokens) -> generate (guided by them), as a user chains them."
    data, run_dir = tmp_path / "data", tmp_path / "run"
    r = run("render", "--out", str(data), "--n-objects", "2", "--size", "128", "--seed", "1", "--robots", "quadrupeds", "--no-progress")
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in data.iterdir() if p.is_dir()).__len__() == 2
    small = ["--n-tokens", "16", "--map-res", "16", "--n-augment", "1"]
    r = run("discover", "--data", str(data), "--out", str(run_dir), "--steps", "2", *small)
    assert r.returncode == 0, r.stderr
    r = run("eval", str(run_dir), "--data", str(data), "--strategies", "none,spatial", "--steps", "1", "--n-objects", "1")
    assert r.returncode == 0, r.stderr
    report = (run_dir / "report.md").read_text()
    assert "| oracle |" in report and "mvsk (run)" in report
    assert "| spatial |" in (run_dir / "strategies.md").read_text()
    r = run("train", "--data", str(data), "--out", str(tmp_path / "train"), "--tokens", str(run_dir / "tokens.safetensors"),
            "--steps", "1", "--batch-size", "1")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "train" / "checkpoint.pt").is_file() and (tmp_path / "train" / "gates.safetensors").is_file()
    obj = sorted(p for p in data.iterdir() if p.is_dir())[0]
    r = run("generate", str(obj / "000.png"), "--out", str(tmp_path / "gen"), "--steps", "2", "--strategy", "spatial",
            "--tokens", str(run_dir / "tokens.safetensors"), "--guidance-every", "1")
    assert r.returncode == 0, r.stderr
    kp = json.loads((tmp_path / "gen" / "keypoints.json").read_text())
    assert len(kp["xy"]) == 6 and len(kp["tokens"]) == len(kp["xy"][0])
