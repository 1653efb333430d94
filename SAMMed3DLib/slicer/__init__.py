"""The Slicer side of the engine: the module's controller (its Logic), MRML volumes, segments and point lists,
the model store and the self-test scenario.

- ``controller``: ``SegmentationController``, the Qt-free Logic (SAMMed3D.py mixes it into
  ``ScriptedLoadableModuleLogic``); ``actions`` (one type per user action), ``targets`` (per volume/segment state);
- ``mrml``: volumes and segments ↔ SimpleITK; ``markups``: the point lists as a view of a session's clicks;
  ``placing``: place mode and the events observed while the module is shown; ``feedback``: messages, status;
- ``models``: options, weights, networks, download progress; ``panel``: default nodes;
- ``cases``: the worklist's desk (open a case into the scene, save its segmentation and clicks);
  ``cases_section``: the module panel's Cases section over it;
  ``scenario``: the end-to-end checks shared by pytest and Slicer's self-test.

This is the only folder that imports ``slicer``, ``vtk`` or MRML; nothing outside it imports it. It uses MRML
and VTK classes only (no Qt, no ``slicer.app``/``slicer.util``), so it runs on the ``slicer-core`` wheel in tests.
It imports the engine, never the command line, the benchmarks or the server.
"""
