"""The demo's table and plot: linear scale, 95% Wilson intervals, families in order, means with and without
the corruptions near chance."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pushpull.data.corruptions import CORRUPTIONS, FAMILIES
from pushpull.demo import by_family, format_table, near_chance, plot_errors, save_plot, summary_rows, wilson_interval

N = 450


def errors_of(**corruptions: tuple[list[float], list[float]]) -> dict:
    """Demo-shaped errors of two networks: per corruption (plain's 5 severities, push-pull's)."""
    return {name: {"clean": 0.02, "corruptions": {c: list(v[k]) for c, v in corruptions.items()}}
            for k, name in enumerate(("plain", "push-pull"))}


DEMO = errors_of(contrast=([0.713, 0.9, 0.9, 0.9, 0.9], [0.251, 0.771, 0.789, 0.807, 0.871]),
                 gaussian_noise=([0.02, 0.02, 0.024, 0.03, 0.03], [0.02] * 5),
                 defocus_blur=([0.018] * 5, [0.023] * 5))


def test_wilson_interval_known_values():
    assert wilson_interval(0.5, 100) == pytest.approx((0.40383, 0.59617), abs=1e-5)
    lo, hi = wilson_interval(0.0, 100)
    assert lo == 0 and hi == pytest.approx(1.96 ** 2 / (100 + 1.96 ** 2))
    assert wilson_interval(0.9, 450)[0] < 0.9 < wilson_interval(0.9, 450)[1]
    assert wilson_interval(0.86, 2250)[1] < 0.9


def test_families_cover_every_corruption_once_and_order_the_bars():
    assert sorted(c for members in FAMILIES.values() for c in members) == sorted(CORRUPTIONS)
    assert list(FAMILIES) == ["noise", "blur", "weather", "digital"]
    assert by_family(["contrast", "fog", "gaussian_noise", "defocus_blur"]) == \
        ["gaussian_noise", "defocus_blur", "fog", "contrast"]


def test_near_chance_is_chance_inside_the_interval_at_most_severities():
    assert near_chance(DEMO, N) == ["contrast"]  # plain guesses at severities 2-5
    two = errors_of(contrast=([0.5, 0.6, 0.7, 0.9, 0.9], [0.3] * 5), gaussian_noise=([0.1] * 5, [0.1] * 5))
    assert near_chance(two, N) == []  # at chance at only 2 of 5 severities
    assert near_chance(errors_of(contrast=([0.5] * 5, [0.3] * 5)), N, num_classes=2) == ["contrast"]


def test_table_orders_by_family_and_adds_the_mean_without_near_chance():
    lines = format_table(DEMO, N).splitlines()
    labels = [line.split("|")[1].strip() for line in lines[2:]]
    assert labels == ["clean", "gaussian_noise", "defocus_blur", "contrast", "mean over corruptions",
                      "mean without contrast"]
    rows = {r.label: r for r in summary_rows(DEMO, N)}
    assert rows["mean without contrast"].values == pytest.approx([np.mean([0.0248, 0.018]), np.mean([0.02, 0.023])])
    assert rows["mean over corruptions"].trials == 3 * 5 * N and rows["contrast"].trials == 5 * N
    assert "mean without" not in format_table(errors_of(fog=([0.1] * 5, [0.1] * 5)), N)


def test_plot_is_linear_with_intervals_on_every_bar_and_states_n(tmp_path):
    fig = plot_errors(DEMO, N, title="demo")
    full, zoom = fig.axes
    assert full.get_yscale() == zoom.get_yscale() == "linear" and full.get_ylim() == (0, 100)
    labels = [t.get_text().replace("\n", "_") for t in zoom.get_xticklabels()]
    assert labels == ["clean", "gaussian_noise", "defocus_blur", "contrast", "mean over_corruptions",
                      "mean without_contrast"]
    rows = summary_rows(DEMO, N)
    for ax in (full, zoom):
        bars = [p for p in ax.patches]
        assert len(bars) == 2 * len(rows)
        whiskers = [c for c in ax.containers if hasattr(c, "has_yerr") and c.has_yerr]
        assert len(whiskers) == 2  # one error-bar set per network, one whisker per bar
        for k, container in enumerate(whiskers):
            segments = container.lines[2][0].get_segments()
            assert len(segments) == len(rows)
            for segment, row in zip(segments, rows):
                lo, hi = wilson_interval(row.values[k], row.trials)
                assert sorted(segment[:, 1]) == pytest.approx([100 * lo, 100 * hi])
    caption = fig.get_supxlabel()
    assert f"n = {N} images" in caption.replace("\n", " ") and "Wilson" in caption and "contrast" in caption
    top = max(100 * wilson_interval(v, r.trials)[1] for r in rows if r.label != "contrast" for v in r.values)
    contrast = next(r for r in rows if r.label == "contrast")
    assert top < zoom.get_ylim()[1] < 100 * min(contrast.values)  # every bar whole but the near-chance ones
    save_plot(DEMO, tmp_path / "plot.png", N, title="demo")
    assert (tmp_path / "plot.png").read_bytes()[:4] == b"\x89PNG"
    assert not math.isnan(full.get_ylim()[1])
