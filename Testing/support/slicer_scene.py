"""Test helpers on a MRML scene set up the way the Slicer application sets up its own, on the ``slicer-core``
wheel: ``build_app_scene`` (from ``SAMMed3DLib.slicer.scenario``, which ``bench-mainloop`` uses too) and
``expect_one_error``."""

from SAMMed3DLib.slicer.scenario import AppScene, build_app_scene

__all__ = ["AppScene", "build_app_scene", "expect_one_error"]


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
