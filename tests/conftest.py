"Test-wide settings: nothing downloads, figures render off-screen."
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HOME", str(ROOT / ".hf_home"))
os.environ.setdefault("MVSK_CACHE", str(ROOT / ".mvsk_cache"))
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
