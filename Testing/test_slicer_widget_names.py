"""Every ``self.NAME`` the module's Widget uses is its own method or attribute, or one Slicer's base classes give
it: a method renamed in one place (the GUI interface's names) must be renamed everywhere (Slicer would fail in
``setup`` with an AttributeError that no headless test reaches otherwise)."""

import ast
from pathlib import Path

MODULE = Path(__file__).resolve().parents[1] / "SAMMed3D" / "SAMMed3D.py"
INHERITED = {"layout", "parent", "resourcePath", "addObserver", "removeObserver", "removeObservers",
             "developerMode", "reloadButton"}  # fmt: skip
"""What ScriptedLoadableModuleWidget and VTKObservationMixin provide that the Widget uses."""


def test_the_widget_uses_only_names_it_has():
    tree = ast.parse(MODULE.read_text(encoding="utf-8"))
    widget = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "SAMMed3DWidget")
    defined = {n.name for n in widget.body if isinstance(n, ast.FunctionDef)}
    defined |= {t.attr for n in ast.walk(widget) if isinstance(n, (ast.Assign, ast.AnnAssign))
                for t in (n.targets if isinstance(n, ast.Assign) else [n.target])
                if isinstance(t, ast.Attribute) and getattr(t.value, "id", None) == "self"}  # fmt: skip
    used = {n.attr for n in ast.walk(widget) if isinstance(n, ast.Attribute) and getattr(n.value, "id", None) == "self"}
    assert used - defined - INHERITED == set()
