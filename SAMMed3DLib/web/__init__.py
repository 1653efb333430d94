"""The browser station: SAM-Med3D in a web page, on Kitware's trame-slicer (Slicer's MRML scene, slice views and
segmentation editor rendered on the server and streamed to the page).

A room of its own: it may import the engine and the ``slicer/`` room (the page drives the module's own
controller, :class:`~SAMMed3DLib.slicer.controller.SegmentationController`: one click pipeline), and nothing
imports it but the command line (``python -m SAMMed3DLib web``). One browser session = one station process with
its own scene (:mod:`.station`); :mod:`.launcher` gives each browser session its own process behind one address.
"""
