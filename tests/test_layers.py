"""The import layers of DESIGN.md hold: only pipelines/ imports Ray, only the loader imports torch,
converters see only schema/sources/media, the core never imports a converter (contracts in pyproject)."""

import shutil
import subprocess
import sys
from pathlib import Path


def test_import_contracts_hold():
    root = Path(__file__).resolve().parents[1]
    exe = shutil.which("lint-imports") or str(Path(sys.executable).parent / "lint-imports")
    proc = subprocess.run([exe], cwd=root, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "broken" not in proc.stdout.lower() or "0 broken" in proc.stdout
