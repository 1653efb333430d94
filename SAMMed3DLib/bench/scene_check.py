"""Benchmark: what the Slicer module's scene check costs before each click.

The scene is the truth and a session a cache of it, checked before each click (``SAMMed3DLib/slicer/freshness.py``).
This runs exactly the controller's per-click checks (stale targets, the volume through the volume cache, the
target, the segment's stamp, the voxels' identity, and the check before a result is written) on a 512 x 512 x 300
volume when nothing changed, against the reference: checking by content (reading the volume and the segment again
and comparing them with the session's copies). Also the one-off cost when a hand edit moved the segment's stamp
(the whole segment read and compared once). Needs the ``slicer-core`` wheel. Run:
``python -m SAMMed3DLib.bench.scene_check [--size 512,512,300] [--repeats 200]``.
"""

import argparse
import statistics
import time
from typing import Callable, Dict, List, Sequence

import numpy as np

from .machine import describe, machine
from .mainloop import require_slicer_core

TARGET_MS = 5.0
"""The check must cost less than this before a click on a 512 x 512 x 300 volume (milliseconds)."""


def _times(run: Callable[[], object], repeats: int) -> List[float]:
    """Milliseconds of ``repeats`` runs of ``run``."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(1000 * (time.perf_counter() - start))
    return times


def measure(size: Sequence[int] = (512, 512, 300), repeats: int = 200) -> Dict[str, object]:
    """Milliseconds (median, best) of the check when nothing changed, of the content check (the reference, a
    tenth of the repeats), and of the check right after a hand edit; their ratio."""
    require_slicer_core()
    from ..slicer import freshness, mrml
    from ..slicer.scenario import build_app_scene, sphere_voxels
    from ..slicer.targets import Inputs, Targets, VolumeCache

    app = build_app_scene()
    try:
        scene, (nx, ny, nz) = app.scene, (int(v) for v in size)
        voxels = (np.arange(nx, dtype=np.int16)[None, None, :] % 97 + np.zeros((nz, ny, nx), np.int16)) * 10
        from ..slicer.scenario import add_volume

        volume = add_volume(scene, "Volume", voxels, np.diag([0.8, 0.8, 1.0, 1.0]))
        segmentation = mrml.new_segmentation(scene, volume)
        segment = mrml.add_empty_segment(segmentation)
        geometry = mrml.volume_geometry(volume)
        centre = geometry.ijk_to_ras @ [nx / 2, ny / 2, nz / 2, 1.0]
        box = [min(80, n // 2) for n in (nx, ny, nz)]  # a written region of up to 80³ voxels around the centre
        region = (tuple(n // 2 - b // 2 for n, b in zip((nx, ny, nz), box)), tuple(box))
        ball = sphere_voxels(geometry.ijk_to_ras, geometry.dims, centre[:3], 0.8 * min(box) / 2)
        (x, y, z), (sx, sy, sz) = region
        mrml.write_segment(segmentation, segment, geometry, region, ball[z:z + sz, y:y + sy, x:x + sx])
        inputs = Inputs(volume, segmentation, segment)
        cache, targets, watch = VolumeCache(), Targets(), freshness.SceneWatch()
        watch.watch(scene)
        image, geometry, embeddings = cache.checked(inputs, False, local=False)
        target, _ = targets.prepare(inputs, image, geometry, embeddings, False, watch.closes)
        target.session = object()  # a session is open (its steps are not what is measured)

        def check() -> None:  # the controller's per-click checks, in its order (checks.py, controller.py)
            freshness.forget_stale(targets, watch.closes, inputs)
            image, geometry, embeddings = cache.checked(inputs, False, local=False)
            current, _ = targets.prepare(inputs, image, geometry, embeddings, False, watch.closes)
            assert current is target and freshness.hand_edit(current) is None and current.image is image
            assert freshness.changed_while_running(current, current.image_stamp) is None

        def by_content() -> None:  # the reference: read both again and compare them with the session's copies
            again, _ = mrml.read_volume(volume)
            import SimpleITK as sitk

            assert np.array_equal(sitk.GetArrayViewFromImage(again), sitk.GetArrayViewFromImage(target.image))
            assert np.array_equal(mrml.whole_segment(segmentation, segment, geometry), target.seen)

        def after_edit() -> None:  # a hand edit moved the stamp: the whole segment is read and compared once
            layer = segmentation.GetSegmentation().GetSegment(segment).GetRepresentation(mrml._BINARY)
            layer.Modified()
            freshness.hand_edit(target)

        check()  # warm: the first pass reads nothing new, but imports and allocations happen once
        fast = _times(check, repeats)
        slow = _times(by_content, max(3, repeats // 10))
        edited = _times(after_edit, max(3, repeats // 10))
    finally:
        app.close()
    figures = {"size": list(size), "check_ms": statistics.median(fast), "check_best_ms": min(fast),
               "content_ms": statistics.median(slow), "content_best_ms": min(slow),
               "after_hand_edit_ms": statistics.median(edited), "target_ms": TARGET_MS}  # fmt: skip
    figures["ratio"] = figures["check_ms"] / figures["content_ms"]
    return figures


def main(argv: Sequence[str] = ()) -> int:
    parser = argparse.ArgumentParser(prog="python -m SAMMed3DLib.bench.scene_check", description=__doc__.split("\n")[0])
    parser.add_argument("--size", default="512,512,300", help="volume size x,y,z in voxels")
    parser.add_argument("--repeats", type=int, default=200, help="checks timed (the reference: a tenth)")
    args = parser.parse_args(list(argv) or None)
    info = machine()
    figures = measure(tuple(int(v) for v in args.size.split(",")), args.repeats)
    print(describe(info))
    print(f"volume {'x'.join(map(str, figures['size']))}")
    print(f"scene check before a click, nothing changed: median {figures['check_ms']:.3f} ms, "
          f"best {figures['check_best_ms']:.3f} ms (target < {TARGET_MS:.0f} ms: "
          f"{'met' if figures['check_ms'] < TARGET_MS else 'NOT met'})")
    print(f"reference, checking by content (volume and segment read again and compared): median "
          f"{figures['content_ms']:.1f} ms; ratio check / reference {figures['ratio']:.5f}")
    edited = figures["after_hand_edit_ms"]
    print(f"once after a hand edit (the whole segment read and compared): median {edited:.1f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
