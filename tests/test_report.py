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
from pushpull.report import build_tables, load_results, run_names, write_report


def fake_results(name: str, aa: int, clean: float, ce: float | None, fp: float | None, limit=None, *, n: int = 100,
                 flip_rule: str = "hendrycks", label: str | None = None, digest: str = "ab" * 32, **data) -> dict:
    """Every corruption at error ``ce`` for all severities, every perturbation at FP ``fp`` (None: not evaluated)."""
    return {"format": "pushpull-robustness-results", "format_version": 1,
            "model": {"name": name, "label": label or name, "model_kwargs": {"aa": aa}, "weights_sha256": digest},
            "data": {"dataset": "cifar10", "limit": limit, "num_evaluated": n, "num_test_images": 10000, **data},
            "settings": {"flip_rule": flip_rule},
            "clean": {"error": clean},
            "corruptions": {} if ce is None else
            {c: {"errors": {str(s): ce for s in range(1, 6)}} for c in CORRUPTIONS},
            "perturbations": {} if fp is None else
            {p: {"flip_probability": fp, "top5_distance": 0.1} for p in PERTURBATIONS}}


def write_runs(tmp_path, runs: list[dict]) -> list:
    paths = []
    for i, r in enumerate(runs):
        paths.append(tmp_path / f"r{i}.json")
        paths[-1].write_text(json.dumps(r))
    return paths


@pytest.fixture()
def result_files(tmp_path):
    return write_runs(tmp_path, [fake_results("resnet20", 0, 0.08, 0.30, 0.05),
                                 fake_results("resnet20_pp", 0, 0.09, 0.25, 0.04),
                                 fake_results("resnet20_pp", 2, 0.10, 0.27, 0.03, limit=100)])


def test_tables_values_best_and_baseline_row(result_files):
    base = load_baseline("alexnet-cifar10")
    summary, corr, pert = build_tables(load_results(result_files), base)
    assert summary.header == ["Network", "AA", "n", "flip rule", "E (%)", "mCE", "rCE", "mFR"]
    assert summary.rows[0][:4] == ["alexnet-cifar10", "", None, None] and summary.rows[0][5:] == [1.0, 1.0, 1.0]
    resnet = summary.rows[1]
    want_mce = np.mean([0.30 / base.corruption_mean_errors[c] for c in BENCHMARK_CORRUPTIONS])
    want_rce = np.mean([(0.30 - 0.08) / (base.corruption_mean_errors[c] - 0.1387) for c in BENCHMARK_CORRUPTIONS])
    want_mfr = np.mean([0.05 / base.flip_probabilities[p] for p in PERTURBATIONS])
    assert resnet[:4] == ["resnet20", "", "100", "hendrycks"]
    assert resnet[4:] == pytest.approx([8.0, want_mce, want_rce, want_mfr])  # errors in %
    assert summary.rows[3][:3] == ["resnet20_pp", "Rect-2", "100"]  # AA tells it from row 2; n is its own column
    md = summary.markdown().splitlines()
    assert "**8.00**" in md[3] and "**8.00**" not in md[2]  # best E: resnet20, not the AlexNet row
    assert "**" in md[4].split("|")[6]  # best mCE: resnet20_pp (CE 25%)
    assert corr.header[:4] == ["Network", "AA", "n", "clean (%)"] and corr.header[4:] == list(CORRUPTIONS)
    assert corr.rows[0][4] == pytest.approx(38.44) and corr.rows[0][-1] is None  # no baseline for extras
    assert "--" in corr.latex() and "–" in corr.markdown()
    assert pert.header[4:] == list(PERTURBATIONS) and pert.rows[3][4] == 0.03
    tex = pert.latex()
    assert "\\textbf{0.0300}" in tex and "gaussian\\_noise" in tex and tex.count("\\midrule") == 2
    rows = list(csv.reader(io.StringIO(corr.csv())))
    assert rows[0] == corr.header and float(rows[2][4]) == pytest.approx(30.0)


def test_best_is_bold_only_among_comparable_rows(tmp_path):
    runs = load_results(write_runs(tmp_path, [
        fake_results("a", 0, 0.05, 0.20, 0.02, n=100),  # best of everything, but on 100 images
        fake_results("b", 0, 0.08, 0.30, 0.06, n=10000),
        fake_results("c", 0, 0.09, 0.35, 0.05, n=10000),
        fake_results("d", 0, 0.10, 0.40, 0.04, n=10000, flip_rule="consecutive")]))
    summary, corr, pert = build_tables(runs, load_baseline("alexnet-cifar10"))
    md = summary.markdown().splitlines()[3:]  # after the header and the baseline row
    cells = [[c.strip() for c in line.split("|")[1:-1]] for line in md]
    assert [row[:3] for row in cells] == [["a", "100", "hendrycks"], ["b", "10000", "hendrycks"],
                                          ["c", "10000", "hendrycks"], ["d", "10000", "consecutive"]]
    assert [row[3] for row in cells] == ["5.00", "**8.00**", "9.00", "10.00"]  # E: n=10000 rows compared, not 'a'
    assert ["**" in row[4] for row in cells] == [False, True, False, False]  # mCE likewise
    assert ["**" in row[6] for row in cells] == [False, False, True, False]  # mFR: same n and flip rule ('d' alone)
    pert_md = pert.markdown().splitlines()[3:]
    assert ["**0.0500**" in line for line in pert_md] == [False, False, True, False]
    assert ["**" in line for line in corr.markdown().splitlines()[3:]] == [False, True, False, False]


def test_run_names_tell_runs_apart():
    runs = [fake_results("resnet20", 0, 0.1, 0.3, 0.05, label="mine"),
            fake_results("resnet20", 0, 0.1, 0.3, 0.05, digest="12345678" + "0" * 56),
            fake_results("resnet20", 0, 0.1, 0.3, 0.05),
            fake_results("resnet20", 2, 0.1, 0.3, 0.05),  # told apart by its AA filter
            fake_results("wrn", 0, 0.1, 0.3, 0.05, flip_rule="consecutive"),
            fake_results("wrn", 0, 0.1, 0.3, 0.05, n=1000),
            fake_results("x", 0, 0.1, 0.3, 0.05), fake_results("x", 0, 0.1, 0.3, 0.05)]
    assert run_names(runs) == ["mine", "resnet20 (weights 12345678)", "resnet20 (weights abababab)", "resnet20",
                               "wrn (consecutive flips, n=100)", "wrn (hendrycks flips, n=1000)", "x", "x #2"]


def test_runs_with_only_p_or_only_c_results_appear(tmp_path):
    paths = write_runs(tmp_path, [fake_results("full", 0, 0.08, 0.30, 0.05), fake_results("p_only", 0, 0.1, None, 0.04),
                                  fake_results("c_only", 3, 0.1, 0.28, None)])
    out = tmp_path / "report"
    write_report(paths, out)
    summary = (out / "summary.md").read_text()
    assert "| p_only |  | 100 | hendrycks | 10.00 | – | – |" in summary
    assert "| c_only | Tri-3 | 100 | – | 10.00 |" in summary
    assert "| p_only |  | 100 | hendrycks | **0.0400** |" in (out / "perturbations.md").read_text()
    svg = (out / "fig3.svg").read_text()
    assert "p_only: -P only" in svg and "c_only: -C only" in svg and "full" in svg
    assert "all runs: n = 100 test images, hendrycks flip rule" in svg


@pytest.mark.parametrize("fields, note", [
    ({"official": False, "notes": []}, "clean test data differ from the official release"),
    ({"official": False, "notes": ["data/cifar-10-batches-py/test_batch is not the official cifar10 test file"]},
     "data/cifar-10-batches-py/test_batch is not the official cifar10 test file")])
def test_non_official_data_is_footnoted(tmp_path, fields, note):
    paths = write_runs(tmp_path, [fake_results("official", 0, 0.08, 0.30, 0.05),
                                  fake_results("jpeg", 0, 0.09, 0.25, 0.04, **fields)])
    out = tmp_path / "report"
    write_report(paths, out)
    for name in ("summary", "corruptions", "perturbations"):
        md = (out / f"{name}.md").read_text()
        assert "| jpeg [1] |" in md and "| official |" in md and f"\n\n[1] {note}" in md
        assert f"[1] {note}".replace("_", "\\_") in (out / f"{name}.tex").read_text()
        rows = list(csv.reader(io.StringIO((out / f"{name}.csv").read_text())))
        assert rows[0][-1] == "note" and note in rows[-1][-1] and rows[-2][-1] == ""
    svg = (out / "fig3.svg").read_text()
    assert "jpeg [1]" in svg and note in svg.replace("\n", " ")


def test_every_data_note_is_footnoted_once(tmp_path):
    short = "asked for 2000 images, data/C holds 1000: evaluating 1000"
    paths = write_runs(tmp_path, [fake_results("a", 0, 0.08, 0.30, 0.05, official=False, notes=[short]),
                                  fake_results("b", 0, 0.09, 0.25, 0.04, notes=[short]),
                                  fake_results("c", 0, 0.09, 0.25, 0.04, official=True, notes=[])])
    md = build_tables(load_results(paths), None)[0].markdown()
    assert "| a [1, 2] |" in md and "| b [1] |" in md and "| c |" in md
    assert md.count(short) == 1 and "[2] clean test data differ from the official release" in md


def test_an_unfinished_run_is_footnoted(tmp_path):
    unfinished = {**fake_results("cut", 0, 0.09, 0.25, None), "complete": False}  # as eval leaves it on Ctrl-C
    paths = write_runs(tmp_path, [fake_results("whole", 0, 0.08, 0.30, 0.05), unfinished])
    md = build_tables(load_results(paths), None)[0].markdown()
    assert "| cut [1] |" in md and "| whole |" in md and "\n\n[1] an unfinished run (interrupted)" in md


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
    assert "| resnet20 |  | 100 | hendrycks | **8.00** | 1.00 | 1.00 | 1.00 |" in md  # a results file as baseline
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    assert main(["report", str(bad), "--out", str(tmp_path / "rep2")]) == 1
    assert "not a pushpull results file" in capsys.readouterr().err
