"""Shared fixtures; helpers live in tests_helpers.py (importable from every test module)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from tests_helpers import fake_distribution

__all__ = ["fake_distribution"]
