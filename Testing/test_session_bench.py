"""``bench-session`` report formatting (the timed runs themselves are not part of the test suite)."""

from SAMMed3DLib.bench.session import format_report


def figures(first: float, refine: float) -> dict:
    breakdown = {"preprocess": 0.05, "encode": 0.9, "decode": 0.02, "paste": 0.1, "total": first}
    return {
        "first_click_s": first,
        "first_click_breakdown": breakdown,
        "refine_s": [refine, refine * 2, refine],
        "refine_breakdown": breakdown,
        "lesion_refine_s": [0.06],
        "lesion_refine_breakdown": breakdown,
        "peak_rss_mb": 1200.0,
        "paste_methods": {"separable_s": 0.02, "simpleitk_s": 0.15},
    }


def test_report_has_ratios_and_handles_missing_reference():
    official = {"first_click_s": 9.0, "refine_s": [9.0, 9.5], "peak_rss_mb": 2100.0}
    lines = format_report({"ours": figures(1.2, 0.2), "official": official})
    text = "\n".join(lines)
    assert "7.5x" in text and "46.2x" in text and "2100MB" in text
    assert "separable 20 ms, SimpleITK resampler 150 ms (7.5x)" in text and "session set-up 0 ms" in text
    alone = format_report({"ours": figures(1.2, 0.2), "official": None})
    assert not any(line.rstrip().endswith("x") for line in alone) and "1200MB" in "\n".join(alone)


def test_report_gives_the_lower_precision_run_with_its_mask_agreement():
    lower = dict(figures(0.7, 0.05), mask_dice_vs_fp32=0.9912)
    text = "\n".join(format_report({"ours": figures(1.2, 0.2), "official": None, "ours_bf16": lower}))
    assert "ours with a bf16 encoder: first click 0.700s, refinement (median) 0.050s" in text
    assert "final mask Dice vs fp32 0.9912" in text
