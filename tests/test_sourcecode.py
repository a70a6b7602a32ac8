"""The package type-checks under mypy --strict (config in pyproject.toml),
including the hand-written stub of the compiled engine."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_mypy_strict():
    pytest.importorskip("mypy", reason="mypy is in the test extra: pip install -e .[test]")
    r = subprocess.run([sys.executable, "-m", "mypy", "--no-error-summary", "walfast"],
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
