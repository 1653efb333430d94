"""Extension packaging: the CMake lists are complete, the installed layout imports, the panel matches the code."""

import ast
import re
import shutil
import struct
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Dict, List

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODULE_DIR = ROOT / "SAMMed3D"
MODULE_PY = MODULE_DIR / "SAMMed3D.py"
UI_FILE = MODULE_DIR / "Resources" / "UI" / "SAMMed3D.ui"


def cmake_sets(path: Path) -> Dict[str, List[str]]:
    """``set(NAME item item ...)`` blocks of a CMake file, comments dropped, ``${MODULE_NAME}`` expanded."""
    lines = path.read_text(encoding="utf-8").splitlines()
    text = "\n".join(line for line in lines if not line.lstrip().startswith("#"))
    sets: Dict[str, List[str]] = {}
    for name, body in re.findall(r'\bset\(\s*(\w+)\s+((?:"[^"]*"|[^)"])*)\)', text):
        items = re.findall(r'"[^"]*"|\S+', body)
        sets[name] = [item.strip('"') for item in items]
    module = sets.get("MODULE_NAME", ["SAMMed3D"])[0]
    return {k: [v.replace("${MODULE_NAME}", module) for v in items] for k, items in sets.items()}


NOT_SHIPPED = ("cli", "bench", "server", "web")
"""Rooms of SAMMed3DLib that Slicer never runs: the command line, the benchmarks, the server, the browser station."""


def shipped_python_files() -> List[str]:
    """The engine and SAMMed3DLib/slicer/: every .py Slicer runs (``__main__`` only starts the command line)."""
    files = (p.relative_to(ROOT) for p in (ROOT / "SAMMed3DLib").rglob("*.py") if "__pycache__" not in p.parts)
    return sorted(p.as_posix() for p in files if p.parts[1] not in NOT_SHIPPED and p.name != "__main__.py")


def test_the_extension_ships_exactly_the_engine_and_the_slicer_side():
    listed = cmake_sets(MODULE_DIR / "CMakeLists.txt")["ENGINE_PYTHON_SCRIPTS"]
    assert listed == shipped_python_files(), "ENGINE_PYTHON_SCRIPTS in SAMMed3D/CMakeLists.txt must list, sorted, " \
        f"the engine and slicer/ files: {shipped_python_files()}"


def test_every_resource_is_packaged():
    sets = cmake_sets(MODULE_DIR / "CMakeLists.txt")
    resources = sets["MODULE_PYTHON_RESOURCES"]
    present = sorted(p.relative_to(MODULE_DIR).as_posix() for p in (MODULE_DIR / "Resources").rglob("*") if p.is_file())
    assert sorted(resources) == present, "MODULE_PYTHON_RESOURCES must list every file under SAMMed3D/Resources"
    assert "model_weights.json" in sets["ENGINE_RESOURCES"]
    assert all((ROOT / r).is_file() for r in sets["ENGINE_RESOURCES"])


def test_module_cmake_shape():
    text = (MODULE_DIR / "CMakeLists.txt").read_text(encoding="utf-8")
    assert re.search(r"slicerMacroBuildScriptedModule\(.*WITH_GENERIC_TESTS.*?\)", text, re.S)
    assert re.search(r"slicer_add_python_unittest\(\s*SCRIPT\s+\$\{MODULE_NAME\}\.py\s*\)", text)
    assert "SAMMed3D.py" in cmake_sets(MODULE_DIR / "CMakeLists.txt")["MODULE_PYTHON_SCRIPTS"]


def test_extension_cmake_shape():
    text = (ROOT / "CMakeLists.txt").read_text(encoding="utf-8")
    sets = cmake_sets(ROOT / "CMakeLists.txt")
    for key in ("HOMEPAGE", "CONTRIBUTORS", "DESCRIPTION", "ICONURL", "SCREENSHOTURLS"):
        assert sets.get(f"EXTENSION_{key}", [""])[0], f"EXTENSION_{key} is empty"
    assert sets["EXTENSION_CATEGORY"] == ["Segmentation"]
    assert sets["EXTENSION_DEPENDS"] == ["PyTorch"]
    for needle in ("find_package(Slicer REQUIRED)", "include(${Slicer_USE_FILE})", "add_subdirectory(SAMMed3D)",
                   "include(${Slicer_EXTENSION_CPACK})"):  # fmt: skip
        assert needle in text


def test_extension_icon_and_screenshots_are_files_of_this_repository():
    """The Extensions Manager fetches these URLs from the main branch: each must name a committed file."""
    sets = cmake_sets(ROOT / "CMakeLists.txt")
    for key in ("ICONURL", "SCREENSHOTURLS"):
        for url in sets[f"EXTENSION_{key}"]:
            path = url.partition("/main/")[2]
            assert path and (ROOT / path).is_file(), f"EXTENSION_{key} names {url}, which is not in the repository"


@pytest.mark.parametrize("icon", ["Resources/SAMMed3D.png", "SAMMed3D/Resources/Icons/SAMMed3D.png"])
def test_icons_are_128_px_pngs(icon):
    data = (ROOT / icon).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", data[16:24]) == (128, 128)


def test_installed_layout_imports_and_finds_the_registry(tmp_path):
    """Lay files out as the build does (qt-scripted-modules/) and import the engine from there alone."""
    sets = cmake_sets(MODULE_DIR / "CMakeLists.txt")
    target = tmp_path / "qt-scripted-modules"
    for script in sets["ENGINE_PYTHON_SCRIPTS"]:
        (target / script).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / script, target / script)
    for resource in sets["ENGINE_RESOURCES"]:
        shutil.copy(ROOT / resource, target / resource)
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "import SAMMed3DLib, SAMMed3DLib.slicer.controller, SAMMed3DLib.slicer.mrml;"
        "from SAMMed3DLib.weights import default_registry_path, load_registry;"
        "assert str(default_registry_path()).startswith(sys.argv[1]), default_registry_path();"
        "assert load_registry();"
        "assert SAMMed3DLib.__file__.startswith(sys.argv[1])"
    )
    env_path = [p for p in sys.path if p and Path(p).resolve() != ROOT]
    result = subprocess.run(
        [sys.executable, "-c", code, str(target)], cwd=tmp_path, capture_output=True, text=True,
        env={"PYTHONPATH": ":".join(env_path), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]


def test_developer_install_finds_the_engine_beside_the_module():
    """With only SAMMed3D/ on the module path (Extension Wizard), SAMMed3D.py adds the parent folder."""
    tree = ast.parse(MODULE_PY.read_text(encoding="utf-8"))
    function = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "_make_engine_importable")
    code = (
        "import sys, ast\n"
        "sys.path = [p for p in sys.path if p not in ('', sys.argv[2])]\n"
        "from pathlib import Path\n" + ast.unparse(function) + "\n"
        "_make_engine_importable()\n"
        "import SAMMed3DLib; assert SAMMed3DLib.__file__.startswith(sys.argv[2]), SAMMed3DLib.__file__\n"
        "from SAMMed3DLib.weights import default_registry_path; assert default_registry_path().is_file()\n"
    )
    namespace = f"__file__ = {str(MODULE_PY)!r}\n"
    result = subprocess.run(
        [sys.executable, "-c", namespace + code, str(MODULE_DIR), str(ROOT)], cwd=MODULE_DIR,
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]


def ui_widget_names() -> set:
    return {w.get("name") for w in ET.parse(UI_FILE).getroot().iter("widget")}


def test_ui_parses_and_has_every_widget_the_code_uses():
    names = ui_widget_names()
    used = set(re.findall(r"self\.ui\.(\w+)", MODULE_PY.read_text(encoding="utf-8")))
    assert used, "no self.ui.X found: the check would be vacuous"
    assert not used - names, f"widgets used in SAMMed3D.py but absent from the .ui: {sorted(used - names)}"
    dynamic = set(re.findall(r'getattr\(self\.ui, f"\{name\}Button"\)', MODULE_PY.read_text(encoding="utf-8")))
    if dynamic:
        assert {f"{n}Button" for n in ("undo", "redo", "reset", "finish")} <= names


def parameter_fields() -> set:
    tree = ast.parse(MODULE_PY.read_text(encoding="utf-8"))
    node = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "SAMMed3DParameterNode")
    return {s.target.id for s in node.body if isinstance(s, ast.AnnAssign)}


def test_ui_parameter_bindings_exist_in_the_parameter_node():
    root = ET.parse(UI_FILE).getroot()
    bound = {prop.find("string").text for prop in root.iter("property") if prop.get("name") == "SlicerParameterName"}
    assert bound and bound <= parameter_fields()


def test_ui_uses_slicer_widgets_and_declares_them():
    root = ET.parse(UI_FILE).getroot()
    classes = {w.get("class") for w in root.iter("widget")}
    declared = {c.find("class").text for c in root.iter("customwidget")}
    for needed in ("qMRMLNodeComboBox", "qMRMLSegmentSelectorWidget", "ctkCollapsibleButton"):
        assert needed in classes and needed in declared


def module_constant(name: str):
    tree = ast.parse(MODULE_PY.read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == name for t in node.targets):
            return ast.literal_eval(node.value)
    raise KeyError(name)


def test_shortcuts_are_documented_in_help_and_readme():
    keys = {keys for keys, _ in module_constant("SHORTCUTS")}
    help_text = module_constant("HELP")
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for key in keys - {"Return"}:
        assert key in help_text, f"{key} missing from the module help"
        assert key in readme, f"{key} missing from README"


def test_module_citation():
    text = module_constant("ACKNOWLEDGEMENT")
    assert "arXiv:2310.15161" in text and "ECCV" in text


def test_the_widget_talks_to_its_logic_only():
    """The Logic is the controller: SAMMed3D.py never reaches through it (``self.logic.x.y``)."""
    tree = ast.parse(MODULE_PY.read_text(encoding="utf-8"))
    reached = []
    for node in ast.walk(tree):
        inner = node.value if isinstance(node, ast.Attribute) else None
        if isinstance(inner, ast.Attribute) and isinstance(inner.value, ast.Attribute) and inner.value.attr == "logic":
            reached.append(f"self.logic.{inner.attr}.{node.attr}")
    assert reached == [], reached
    classes = {n.name: n for n in tree.body if isinstance(n, ast.ClassDef)}
    bases = [ast.unparse(b) for b in classes["SAMMed3DLogic"].bases]
    assert bases == ["ScriptedLoadableModuleLogic", "SegmentationController"]
