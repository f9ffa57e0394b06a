import subprocess
import sys

import pytest

from metis_core._optional import require
from metis_core.errors import MissingDependencyError

HEAVY = (
    "transformers",
    "peft",
    "pytorch_kinematics",
    "dex_retargeting",
    "pyarrow",
    "matplotlib",
    "click",
)


def test_importing_metis_core_stays_light_and_builds_no_plugin_manager() -> None:
    code = (
        "import sys, metis_core\n"
        "from metis_core.plugins import get_plugin_manager\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
        "print(get_plugin_manager.cache_info().currsize)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    heavy, managers = out.splitlines()
    assert heavy == "[]"
    assert managers == "0"


def test_missing_optional_dependency_names_the_install_command() -> None:
    with pytest.raises(MissingDependencyError, match=r"pip install 'metis-core\[vla\]'"):
        require("a_module_that_does_not_exist", install="metis-core[vla]", feature="the VLA")
    assert require("json", install="-").dumps([1]) == "[1]"
