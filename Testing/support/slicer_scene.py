"""A MRML scene set up the way the Slicer application sets up its own, on the ``slicer-core`` wheel.

Slicer's core application creates one ``vtkSlicerApplicationLogic`` for the scene and, for every module,
gives the module logic the application logic first and the scene second (that order matters: the colour
logic looks its default tables up through the application logic), then registers the logic by module name.
Without the Segmentations logic on the scene, for instance, the binary-labelmap converter rules are never
registered and segments cannot even be created, so tests on a bare ``vtkMRMLScene`` would prove little.
"""

from dataclasses import dataclass, field
from typing import Dict

import slicer

MODULE_LOGICS = (
    ("Colors", "vtkSlicerColorLogic"),
    ("SubjectHierarchy", "vtkSlicerSubjectHierarchyModuleLogic"),
    ("Volumes", "vtkSlicerVolumesLogic"),
    ("Transforms", "vtkSlicerTransformLogic"),
    ("Segmentations", "vtkSlicerSegmentationsModuleLogic"),
    ("Markups", "vtkSlicerMarkupsLogic"),
)
"""(module name, logic class) in the order Slicer loads them (dependencies first)."""


@dataclass
class AppScene:
    scene: "slicer.vtkMRMLScene"
    app_logic: "slicer.vtkSlicerApplicationLogic"
    logics: Dict[str, object] = field(default_factory=dict)

    def close(self) -> None:
        for logic in reversed(list(self.logics.values())):
            logic.SetMRMLScene(None)
        self.app_logic.SetMRMLScene(None)
        self.scene.Clear(True)


def build_app_scene() -> AppScene:
    """A scene with the application logic and the module logics the SAM-Med3D module relies on."""
    scene = slicer.vtkMRMLScene()
    app_logic = slicer.vtkSlicerApplicationLogic()
    app_logic.SetMRMLScene(scene)
    app = AppScene(scene, app_logic)
    for module, class_name in MODULE_LOGICS:
        logic = getattr(slicer, class_name)()
        logic.SetMRMLApplicationLogic(app_logic)
        logic.SetMRMLScene(scene)
        app_logic.SetModuleLogic(module, logic)
        app.logics[module] = logic
    # Singletons the application creates on start-up (selection and interaction nodes).
    assert scene.GetNodeByID("vtkMRMLSelectionNodeSingleton") is not None
    assert scene.GetSubjectHierarchyNode() is not None
    return app


def expect_one_error(scenario, fragment: str, action) -> str:
    """Run ``action`` on a ``Scenario`` and check it reported exactly one error containing ``fragment``
    and left the scene as it was (``scene_fingerprint``). Returns the error text."""
    from SAMMed3DLib.slicer.scenario import scene_fingerprint

    before = scene_fingerprint(scenario.scene)
    count = len(scenario.controller.messages)
    action()
    scenario.controller.wait()
    errors = [text for text, is_error in scenario.controller.messages[count:] if is_error]
    assert len(errors) == 1 and fragment.lower() in errors[0].lower(), scenario.controller.messages[count:]
    assert scene_fingerprint(scenario.scene) == before, "a failed action changed the scene"
    return errors[0]
