"""Benchmarks and the click-simulation evaluation: the network against the official implementation
(``network``), interactive clicks against the official-style pipeline (``session``), and Dice per click
against a label map (``evaluation``).

May import the engine; the engine and the Slicer side never import it. torchio and medim are test-only
references, imported lazily.
"""
