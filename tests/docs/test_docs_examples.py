"""Every ```python block of the docs runs, in order, per page (a ``# skip-test`` block is shown only).

The embodiment-plugin tutorial runs against the example plugin pip-installed into a temporary
site directory and found through the registry, as a user would have it after
``pip install ./examples/plugin_template``.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from metis_core.registry import refresh_registries

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"
TEMPLATE = REPO / "examples" / "plugin_template"

_spec = importlib.util.spec_from_file_location("readme_blocks", REPO / ".ci" / "readme_blocks.py")
readme_blocks = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(readme_blocks)

PAGES = sorted(
    p
    for p in DOCS.rglob("*.md")
    if "_build" not in p.parts and readme_blocks.BLOCK.search(p.read_text())
)
NEEDS_TEMPLATE = {"tutorials/embodiment_plugin.md"}
REQUIRED = {
    "quickstart.md",
    "concepts/hand_contract.md",
    "concepts/components.md",
    "concepts/dynamics_tokens.md",
    "concepts/reasoning.md",
    "tutorials/rq_tokens.md",
    "tutorials/dataset_source.md",
    "tutorials/posttrain_lerobot.md",
    "tutorials/evaluate_sim.md",
    "tutorials/serve_robot.md",
}


def _runnable(page: Path) -> bool:
    blocks = readme_blocks.BLOCK.findall(page.read_text(encoding="utf-8"))
    return any(not block.startswith("# skip-test") for block in blocks)


@pytest.fixture(scope="module")
def template_site(tmp_path_factory: pytest.TempPathFactory):
    site = tmp_path_factory.mktemp("docs_site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--target", str(site), str(TEMPLATE)],
        check=True,
    )  # fmt: skip
    sys.path.insert(0, str(site))
    refresh_registries()
    yield site
    sys.path.remove(str(site))
    for module in [m for m in sys.modules if m.startswith("metis_tendon_hand")]:
        del sys.modules[module]
    refresh_registries()


def test_the_docs_have_executable_examples() -> None:
    names = {p.relative_to(DOCS).as_posix() for p in PAGES if _runnable(p)}
    missing = (REQUIRED | NEEDS_TEMPLATE) - names
    assert not missing, f"pages without executable ```python blocks: {sorted(missing)}"


@pytest.mark.parametrize(
    "page", [p for p in PAGES if _runnable(p)], ids=lambda p: p.relative_to(DOCS).as_posix()
)
def test_docs_page_examples_run(page: Path, request: pytest.FixtureRequest) -> None:
    if page.relative_to(DOCS).as_posix() in NEEDS_TEMPLATE:
        request.getfixturevalue("template_site")
    assert readme_blocks.run(page) >= 1
