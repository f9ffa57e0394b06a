"""Fixtures of the source-adapter tests; helpers and per-source writers live beside this file.

``source_fixtures.py`` makes ground-truth hand motion; ``fixtures_<source>.py`` write it in each
source's published on-disk layout. This folder is put on ``sys.path`` so tests import them.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
