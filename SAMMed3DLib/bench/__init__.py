"""Benchmarks and the click-simulation evaluation: the network against the official implementation
(``network``), interactive clicks against the official-style pipeline (``session``), and Dice per click
against a label map (``evaluation``), the Slicer module's worker under a GIL-holding stand-in main loop
(``mainloop``; the loop itself is ``gil_loop``, shared with the tests), clicks through a server (``server``), and
a trained-looking answer from random weights (``lesion``, also used by ``serve --answer lesion``).

May import the engine, and in ``mainloop`` only, lazily, the Slicer side (it needs the slicer-core wheel); the
engine and the Slicer side never import it. torchio and medim are test-only
references, imported lazily.
"""
