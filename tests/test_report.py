"""Report tables (md/csv/tex, best in bold, baseline row) and Figure 3 from hand-made results files."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest

from pushpull.baselines import load_baseline
from pushpull.cli import main
from pushpull.data.corruptions import BENCHMARK_CORRUPTIONS, CORRUPTIONS
from pushpull.data.perturbations import PERTURBATIONS
from pushpull.report import build_tables, load_results, write_report


def fake_results(name: str, aa: int, clean: float, ce: float, fp: float, limit=None) -> dict:
    """Every corruption at error ``ce`` for all severities, every perturbation at FP ``fp``."""
    return {"format": "pushpull-robustness-results", "format_version": 1,
            "model": {"name": name, "label": name, "model_kwargs": {"aa": aa}},
            "data": {"dataset": "cifar10", "limit": limit, "num_evaluated": 100, "num_test_images": 10000},
            "clean": {"error": clean},
            "corruptions": {c: {"errors": {str(s): ce for s in range(1, 6)}} for c in CORRUPTIONS},
            "perturbations": {p: {"flip_probability": fp, "top5_distance": 0.1} for p in PERTURBATIONS}}


@pytest.fixture()
def result_files(tmp_path):
    runs = [fake_results("resnet20", 0, 0.08, 0.30, 0.05), fake_results("resnet20_pp", 0, 0.09, 0.25, 0.04),
            fake_results("resnet20_pp", 2, 0.10, 0.27, 0.03, limit=100)]
    paths = []
    for i, r in enumerate(runs):
        paths.append(tmp_path / f"r{i}.json")
        paths[-1].write_text(json.dumps(r))
    return paths


def test_tables_values_best_and_baseline_row(result_files):
    base = load_baseline("alexnet-cifar10")
    summary, corr, pert = build_tables(load_results(result_files), base)
    assert summary.header == ["Network", "AA", "E (%)", "mCE", "rCE", "mFR"]
    assert summary.rows[0][:2] == ["alexnet-cifar10", ""] and summary.rows[0][3:] == [1.0, 1.0, 1.0]
    resnet = summary.rows[1]
    want_mce = np.mean([0.30 / base.corruption_mean_errors[c] for c in BENCHMARK_CORRUPTIONS])
    want_rce = np.mean([(0.30 - 0.08) / (base.corruption_mean_errors[c] - 0.1387) for c in BENCHMARK_CORRUPTIONS])
    want_mfr = np.mean([0.05 / base.flip_probabilities[p] for p in PERTURBATIONS])
    assert resnet[2:] == pytest.approx([8.0, want_mce, want_rce, want_mfr])  # errors in %
    assert summary.rows[3][0] == "resnet20_pp (n=100)" and summary.rows[3][1] == "Rect-2"  # subset is marked
    md = summary.markdown().splitlines()
    assert "**8.00**" in md[3] and "**8.00**" not in md[2]  # best E: resnet20, not the AlexNet row
    assert "**" in md[4].split("|")[4]  # best mCE: resnet20_pp (CE 25%)
    assert corr.header[:3] == ["Network", "AA", "clean (%)"] and corr.header[3:] == list(CORRUPTIONS)
    assert corr.rows[0][3] == pytest.approx(38.44) and corr.rows[0][-1] is None  # no baseline for extras
    assert "--" in corr.latex() and "–" in corr.markdown()
    assert pert.header[2:] == list(PERTURBATIONS) and pert.rows[3][2] == 0.03
    tex = pert.latex()
    assert "\\textbf{0.0300}" in tex and "gaussian\\_noise" in tex and tex.count("\\midrule") == 2
    rows = list(csv.reader(io.StringIO(corr.csv())))
    assert rows[0] == corr.header and float(rows[2][3]) == pytest.approx(30.0)


def test_write_report_files_and_figure(result_files, tmp_path):
    out = tmp_path / "report"
    written = write_report(result_files, out)
    names = {p.name for p in written}
    for table in ("summary", "corruptions", "perturbations"):
        assert {f"{table}.md", f"{table}.csv", f"{table}.tex"} <= names
    png = (out / "fig3.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    assert "<svg" in (out / "fig3.svg").read_text()[:500]


def test_cli_report_and_errors(result_files, tmp_path, capsys):
    assert main(["report", *map(str, result_files), "--baseline", str(result_files[0]), "--out",
                 str(tmp_path / "rep"), "--no-figure"]) == 0
    md = (tmp_path / "rep" / "summary.md").read_text()
    assert "| resnet20 |  | **8.00** | 1.00 | 1.00 | 1.00 |" in md  # a results file as the baseline
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    assert main(["report", str(bad), "--out", str(tmp_path / "rep2")]) == 1
    assert "not a pushpull results file" in capsys.readouterr().err
