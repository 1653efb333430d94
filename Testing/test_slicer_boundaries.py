"""Architecture rules of the Slicer side: the engine stays importable without Qt or Slicer, the MRML adapter
uses MRML/VTK classes only, and the module script stays a thin layer."""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SLICER_SIDE = ["SAMMed3DLib/mrml.py", "SAMMed3DLib/slicer_logic.py", "SAMMed3DLib/slicer_worker.py",
               "SAMMed3DLib/slicer_scenario.py", "SAMMed3DLib/slicer_models.py",
               "SAMMed3DLib/slicer_panel.py"]  # fmt: skip
FORBIDDEN_MODULES = {"qt", "ctk", "slicer.util", "slicer.ScriptedLoadableModule", "slicer.parameterNodeWrapper"}


def imported_modules(path: Path) -> set:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module)
    return names


def test_slicer_side_of_the_engine_uses_no_gui():
    for name in SLICER_SIDE:
        assert not imported_modules(ROOT / name) & FORBIDDEN_MODULES, name
        for node in ast.walk(ast.parse((ROOT / name).read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute) and getattr(node.value, "id", None) == "slicer":
                assert node.attr not in ("app", "util", "mrmlScene", "modules"), f"{name} uses slicer.{node.attr}"


def test_only_mrml_py_imports_slicer():
    importers = sorted(
        p.relative_to(ROOT).as_posix() for p in (ROOT / "SAMMed3DLib").rglob("*.py") if "slicer" in imported_modules(p)
    )
    assert importers == ["SAMMed3DLib/mrml.py"], importers


def test_engine_imports_without_qt_or_slicer():
    code = (
        "import sys, SAMMed3DLib, SAMMed3DLib.slicer_worker\n"
        "assert 'slicer' not in sys.modules and 'qt' not in sys.modules"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]


def test_module_script_is_thin():
    assert len((ROOT / "SAMMed3D" / "SAMMed3D.py").read_text(encoding="utf-8").splitlines()) < 500
