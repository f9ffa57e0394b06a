"""Run the ```python blocks of a Markdown file in order, in one namespace, from a temp directory.

Usage: python .ci/readme_blocks.py README.md [MORE.md ...]
A block whose first line is ``# skip-test`` is not run.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
import types
from pathlib import Path

BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)


def run(path: Path) -> int:
    blocks = [
        b
        for b in BLOCK.findall(path.read_text(encoding="utf-8"))
        if not b.startswith("# skip-test")
    ]
    if not blocks:
        raise SystemExit(f"{path}: no ```python blocks to run")
    # The blocks run as a module of their own (so that dataclasses and pickling find it), and
    # without this harness's `from __future__ import annotations` (dont_inherit).
    module = types.ModuleType("__readme__")
    namespace = module.__dict__
    sys.modules["__readme__"] = module
    with tempfile.TemporaryDirectory() as tmp:
        cwd = os.getcwd()
        os.chdir(tmp)
        try:
            for number, code in enumerate(blocks, 1):
                exec(compile(code, f"{path}:block{number}", "exec", dont_inherit=True), namespace)
        finally:
            os.chdir(cwd)
            sys.modules.pop("__readme__", None)
    print(f"{path}: {len(blocks)} python block(s) ran")
    return len(blocks)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    for argument in sys.argv[1:]:
        run(Path(argument))
