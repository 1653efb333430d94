"""The Slicer side of the engine: MRML volumes, segments and point lists, the module's controller, its
background worker, model store and self-test scenario.

This is the only folder that imports ``slicer``, ``vtk`` or MRML; nothing outside it imports it. It uses MRML
and VTK classes only (no Qt, no ``slicer.app``/``slicer.util``), so it runs on the ``slicer-core`` wheel in tests.
The module script (SAMMed3D/SAMMed3D.py) wires Qt to it; it imports the engine, never the command line or the
benchmarks.
"""
