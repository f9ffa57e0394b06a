#!/usr/bin/env bash
# `pip install metis-tokenizers` must stay light: build wheels, install metis-core and
# metis-tokenizers alone into a clean venv, check that no heavy dependency came along, import.
set -euo pipefail
cd "$(dirname "$0")/.."
LIGHT=$(mktemp -d)/venv
python3 -m venv "$LIGHT"
"$LIGHT/bin/pip" install --quiet -c constraints.txt "torch==2.13.0"
"$LIGHT/bin/pip" install --quiet -c constraints.txt dist/metis_core-*.whl dist/metis_tokenizers-*.whl
installed=$("$LIGHT/bin/pip" list --format=freeze | tr 'A-Z_' 'a-z-')
status=0
for heavy in transformers peft pytorch-kinematics dex-retargeting pin mujoco; do
    if grep -q "^${heavy}==" <<<"$installed"; then
        echo "FAIL: $heavy was installed with metis-core + metis-tokenizers" >&2
        status=1
    fi
done
for ours in metis-embodiments metis-datasets; do
    if grep -q "^${ours}==" <<<"$installed"; then
        echo "FAIL: $ours was installed with metis-core + metis-tokenizers" >&2
        status=1
    fi
done
cd "$(dirname "$LIGHT")"
"$LIGHT/bin/python" - <<'PY'
import sys
import metis_core, metis_tokenizers
from metis_core import TOKENIZERS
heavy = [m for m in ("transformers", "peft", "pytorch_kinematics", "dex_retargeting") if m in sys.modules]
assert not heavy, f"importing metis_core/metis_tokenizers pulled in {heavy}"
print("light install OK: metis-core", metis_core.__version__, "| tokenizers registered:", TOKENIZERS.names())
PY
if [ -f "$OLDPWD/metis_tokenizers/README.md" ] && [ -f "$OLDPWD/.ci/readme_blocks.py" ]; then
    "$LIGHT/bin/python" "$OLDPWD/.ci/readme_blocks.py" "$OLDPWD/metis_tokenizers/README.md"
fi
rm -rf "$(dirname "$LIGHT")"
exit $status
