"The `mvsk` command as a user runs it: a subprocess, the bundled sample, the tiny model."
import json, os, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MVSK = [sys.executable, "-c", "from mvsk.cli import console; console()"]


def run(*args, cwd=ROOT):
    return subprocess.run(MVSK + list(args), cwd=cwd, capture_output=True, text=True, env=os.environ.copy(), timeout=600)


def test_demo_writes_what_it_says(tmp_path):
    out = tmp_path / "demo"
    r = run("demo", "--data", str(ROOT / "data" / "sample"), "--out", str(out), "--n-objects", "1", "--n-tokens", "16")
    assert r.returncode == 0, r.stderr
    assert str(out) in r.stdout
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "summary.json", "token_maps.png", "views_and_latents.png"]
    s = json.loads((out / "summary.json").read_text())
    assert s["maps_shape"] == [1, 6, 16, 32, 32] and s["token_grad_norm"] > 0
    assert json.loads((out / "config.json").read_text())["n_tokens"] == 16


def test_user_errors_are_one_line_and_exit_2(tmp_path):
    for args, word in [(("demo", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "o")), "missing"),
                       (("demo", "--model", str(tmp_path / "no_model"), "--out", str(tmp_path / "o")), "no_model"),
                       (("frobnicate",), "unknown command")]:
        r = run(*args)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        last = [l for l in r.stderr.splitlines() if l.strip()][-1]
        assert word in last, r.stderr
        assert "Traceback" not in r.stderr
    assert not (tmp_path / "o").exists()


def test_help_for_every_command():
    for cmd in ("demo", "render"):
        r = run(cmd, "--help")
        assert r.returncode == 0 and "usage: mvsk " + cmd in r.stdout
