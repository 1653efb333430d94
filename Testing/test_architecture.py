"""The tree's one-way doors, as folder rules (no hand-kept file lists).

- the engine (SAMMed3DLib/ outside slicer/, cli/, bench/, server/) imports none of those rooms;
- only SAMMed3DLib/slicer/ imports slicer, vtk or MRML, and nothing in it imports Qt or the GUI helpers;
- the Slicer side never imports the command line, the benchmarks or the server;
- the browser station (SAMMed3DLib/web/) imports the engine and the Slicer room only, and only the command line
  imports it (it is the one other room that may import slicer, vtk or trame);
- SAMMed3D/SAMMed3D.py imports only the engine's public surface and SAMMed3DLib.slicer;
- inside slicer/, only the self-test scenario (which drives the controller as a user does) imports the controller:
  the other files are below it (the click path: Testing/test_slicer_click_path.py).
"""

import ast
import subprocess
import sys
from pathlib import Path
from typing import Iterator, Set, Tuple

ROOT = Path(__file__).resolve().parents[1]
LIB = ROOT / "SAMMed3DLib"
ROOMS = ("slicer", "cli", "bench", "server", "web")
SLICER_MODULES = {"slicer", "vtk", "vtkmodules", "mrml", "qt", "ctk"}
WEB_MODULES = {"trame", "trame_slicer", "trame_server", "trame_client", "trame_vuetify", "trame_rca", "wslink"}
GUI_MODULES = {"qt", "ctk", "slicer.util", "slicer.ScriptedLoadableModule", "slicer.parameterNodeWrapper"}


def python_files() -> Iterator[Path]:
    return (p for p in LIB.rglob("*.py") if "__pycache__" not in p.parts)


def room_of(path: Path) -> str:
    parts = path.relative_to(LIB).parts
    if parts == ("__main__.py",):
        return "cli"  # ``python -m SAMMed3DLib`` is the command line's door
    return parts[0] if len(parts) > 1 and parts[0] in ROOMS else "engine"


def imports(path: Path) -> Set[Tuple[str, str]]:
    """(absolute module name, room it lands in) for every import of ``path``, relative ones resolved."""
    package = ["SAMMed3DLib", *path.relative_to(LIB).parent.parts]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            names = [module] + ([f"{module}.{a.name}" for a in node.names] if node.level else [])
        else:
            continue
        for name in names:
            parts = name.split(".")
            room = parts[1] if parts[0] == "SAMMed3DLib" and len(parts) > 1 and parts[1] in ROOMS else None
            found.add((name, room or ("engine" if parts[0] == "SAMMed3DLib" else "external")))
    return found


def test_the_engine_imports_no_room():
    for path in python_files():
        if room_of(path) == "engine":
            rooms = {room for _, room in imports(path)} - {"engine", "external"}
            assert not rooms, f"{path.relative_to(ROOT)} imports {rooms}"


def test_only_the_slicer_room_imports_slicer_or_vtk():
    for path in python_files():
        if room_of(path) not in ("slicer", "web"):
            external = {name.split(".")[0] for name, room in imports(path) if room == "external"}
            assert not external & SLICER_MODULES, f"{path.relative_to(ROOT)} imports {external & SLICER_MODULES}"


def test_only_the_web_room_imports_trame():
    for path in python_files():
        if room_of(path) != "web":
            external = {name.split(".")[0] for name, room in imports(path) if room == "external"}
            assert not external & WEB_MODULES, f"{path.relative_to(ROOT)} imports {external & WEB_MODULES}"


def test_the_web_room_reaches_only_the_engine_and_the_slicer_room_and_only_the_command_line_reaches_it():
    for path in python_files():
        rooms = {room for _, room in imports(path)} - {"engine", "external"}
        if room_of(path) == "web":
            assert rooms <= {"web", "slicer"}, f"{path.relative_to(ROOT)} imports {rooms}"
        elif room_of(path) != "cli":
            assert "web" not in rooms, f"{path.relative_to(ROOT)} imports the web room"


def test_the_slicer_room_uses_no_gui_and_no_other_room():
    for path in python_files():
        if room_of(path) == "slicer":
            names = {name for name, _ in imports(path)}
            assert not names & GUI_MODULES, path
            rooms = {room for _, room in imports(path)} - {"engine", "external", "slicer"}
            assert not rooms, f"{path.relative_to(ROOT)} imports {rooms}"
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Attribute) and getattr(node.value, "id", None) == "slicer":
                    assert node.attr not in ("app", "util", "mrmlScene", "modules"), f"{path} uses slicer.{node.attr}"


def test_nothing_below_the_controller_imports_it():
    for path in python_files():
        if room_of(path) in ("engine", "slicer") and path.name not in ("controller.py", "scenario.py"):
            names = {name for name, _ in imports(path)}
            assert not any(n.startswith("SAMMed3DLib.slicer.controller") for n in names), path.relative_to(ROOT)


def test_the_module_script_reaches_only_the_engine_and_the_slicer_room():
    path = ROOT / "SAMMed3D" / "SAMMed3D.py"
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("SAMMed3DLib"):
            parts = node.module.split(".")
            assert len(parts) == 1 or parts[1] in ("slicer", "errors"), node.module
    assert len(path.read_text(encoding="utf-8").splitlines()) < 500


def test_the_engine_and_the_slicer_room_import_without_qt_or_slicer():
    code = (
        "import sys, SAMMed3DLib, SAMMed3DLib.slicer.models, SAMMed3DLib.session, SAMMed3DLib.weights\n"
        "assert not {'slicer', 'qt', 'vtk'} & set(sys.modules), sorted({'slicer', 'qt', 'vtk'} & set(sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]


def test_every_room_says_what_it_is_for():
    for room in ("", "modeling", "weights", *ROOMS):
        init = LIB / room / "__init__.py"
        if init.parent.is_dir():
            assert ast.get_docstring(ast.parse(init.read_text(encoding="utf-8"))), f"{init} needs a docstring"


def test_the_device_list_and_the_panel_models_import_without_torch():
    """The panel and the argument parsers read the one device list before PyTorch may be installed."""
    code = (
        "import sys, SAMMed3DLib.device as d, SAMMed3DLib.slicer.models as m\n"
        "assert tuple(m.DEVICES) == d.DEVICES\n"
        "assert 'torch' not in sys.modules"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
