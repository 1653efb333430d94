"""Test helpers shared by the suite: tiny checkpoints, phantoms, the reference network, a local HTTP server,
the headless Slicer scene, and the stand-in network. Imported as ``support.<name>`` (pytest puts Testing/
on the path through the rootdir conftest)."""
