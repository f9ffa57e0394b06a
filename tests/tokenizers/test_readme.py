"""The README quickstart runs as written."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_readme_python_blocks_run(monkeypatch) -> None:
    script = ROOT / ".ci" / "readme_blocks.py"
    readme = ROOT / "metis_tokenizers" / "README.md"
    monkeypatch.setattr(sys, "argv", [str(script), str(readme)])
    module = runpy.run_path(str(script), run_name="readme_blocks")
    assert module["run"](readme) >= 4
