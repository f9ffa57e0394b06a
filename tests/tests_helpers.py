"""Shared test helpers."""

from __future__ import annotations

import importlib.metadata
import textwrap
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest


def write_distribution(
    root: Path,
    name: str,
    version: str,
    *,
    entry_points: dict[str, dict[str, str]],
    modules: dict[str, str] | None = None,
) -> Path:
    """Write an installed-looking distribution (modules + ``*.dist-info``) under ``root``.

    ``importlib.metadata`` finds it exactly like a pip-installed package once ``root`` is on
    ``sys.path`` (or ``PYTHONPATH`` for a subprocess).
    """
    root.mkdir(parents=True, exist_ok=True)
    for module, source in (modules or {}).items():
        path = root / (module.replace(".", "/") + ".py")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source))
    dist_info = root / f"{name.replace('-', '_')}-{version}.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    )
    lines = []
    for group, entries in entry_points.items():
        lines.append(f"[{group}]")
        lines.extend(f"{key} = {value}" for key, value in entries.items())
        lines.append("")
    (dist_info / "entry_points.txt").write_text("\n".join(lines))
    return root


def entry_points_under(*roots: Path) -> Callable[[str], Iterable[importlib.metadata.EntryPoint]]:
    """An entry-point source that sees only the distributions written under ``roots``."""

    def source(group: str) -> list[importlib.metadata.EntryPoint]:
        found = []
        for dist in importlib.metadata.distributions(path=[str(r) for r in roots]):
            found.extend(ep for ep in dist.entry_points if ep.group == group)
        return found

    return source


@pytest.fixture
def fake_distribution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Factory: ``fake_distribution(name, version, entry_points=..., modules=...) -> root``."""
    counter = iter(range(1000))

    def make(name: str, version: str = "0.1.0", **kwargs) -> Path:
        root = write_distribution(tmp_path / f"site{next(counter)}", name, version, **kwargs)
        monkeypatch.syspath_prepend(str(root))
        return root

    return make


def refresh_digest(root, rel: str) -> bool:
    """Record the current content of a dataset file ``rel`` as its committed digest (a consistent
    edit, as the writer would have recorded it). Returns whether a digest was recorded for it."""
    from metis_core.io import read_json, write_json
    from metis_datasets.validation import file_digest, info_digest

    if rel in ("meta/stats.json", "meta/tasks.parquet"):
        info = read_json(root / "meta/info.json")
        record = info["metis_integrity"]
        record["checksums"][rel] = file_digest(root / rel)
        record["info_sha256"] = info_digest(info)
        write_json(root / "meta/info.json", info)
        return True
    for path in (root / "meta/metis_checksums").rglob("*.json"):
        record = read_json(path)
        if rel in record:
            record[rel] = file_digest(root / rel)
            write_json(path, record)
            return True
    return False
