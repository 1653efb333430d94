"""The worklist section of the page (with ``--data``)."""


def attach(station):
    return None
