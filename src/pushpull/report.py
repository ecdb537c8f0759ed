"""The paper's tables and Figure 3 from results files of ``pushpull eval``.

Tables (each as Markdown, CSV and LaTeX; the best value of each column in bold among the rows
that are comparable, i.e. evaluated on the same number of images with the same flip rule, the
baseline row excluded; each row says its n and flip rule):

- ``summary``: E, mCE, rCE, mFR per model (Table 1 style);
- ``corruptions``: clean error and unnormalised CE per corruption, in % (Tables 4-6);
- ``perturbations``: flip probability per perturbation (Tables 7-9).

Figure 3 (``fig3.png``/``.svg``): mean corruption error against mean flip probability,
one colour per run, one marker per anti-aliasing filter (the paper's layout); a run with only
-P results is a dashed horizontal line at its mean FP, one with only -C results a dotted vertical
line at its mean CE.

Runs are named by their label (``pushpull eval --label``), else by their model; runs that would
share a name (and anti-aliasing filter) get what tells them apart: the weights' digest, the flip
rule, n. What a results file notes about its data (fewer images than asked, clean data that are
not the official release) becomes a numbered footnote in every table and in the figure.
"""

from __future__ import annotations

import csv
import io
import textwrap
import warnings
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from . import metrics
from ._files import atomic_path, atomic_write, read_json
from .baselines import ALL_SEVERITIES, Baseline, default_baseline, load_baseline
from .layers.blur import FILTER_NAMES

AA_FILTERS = {0: "none", **FILTER_NAMES}  # 0: no anti-aliasing (named in the figure's legend only)
AA_MARKERS = {0: "o", 2: "s", 3: "^", 5: "D"}

Cell = float | str | None


@dataclass
class Table:
    """Rows of cells (in the units the header says) with one formatter per column; in each numeric
    column the minimum of every group of comparable rows is in bold (``groups``: one key per cell;
    rows with the same key in a column are compared; default: all rows)."""

    name: str
    header: list[str]
    rows: list[list[Cell]]
    formats: list[Callable[[float], str]]
    first_ranked_row: int = 0  # rows before it (the baseline) take no part in "best"
    groups: list[list[Hashable]] | None = None  # one per ranked row and column
    notes: list[str] = field(default_factory=list)  # footnotes [1], [2] ...
    row_notes: list[list[int]] | None = None  # per row: indices into ``notes``, marked on the row's name

    def best(self) -> list[dict[Hashable, float]]:
        """Per column: the minimum of each group of comparable rows that has two or more values."""
        out = []
        for col in range(len(self.header)):
            by_group: dict[Hashable, list[float]] = {}
            for i, row in enumerate(self.rows[self.first_ranked_row:]):
                if isinstance(row[col], (int, float)):
                    by_group.setdefault(self._group(i, col), []).append(row[col])
            out.append({key: min(values) for key, values in by_group.items() if len(values) > 1})
        return out

    def _group(self, ranked_row: int, col: int) -> Hashable:
        return None if self.groups is None else self.groups[ranked_row][col]

    def _cells(self, bold: Callable[[str], str], missing: str) -> list[list[str]]:
        best = self.best()
        out = []
        for i, row in enumerate(self.rows):
            cells = []
            for col, value in enumerate(row):
                if value is None:
                    cells.append(missing)
                elif isinstance(value, str):
                    marks = self.row_notes[i] if self.row_notes and col == 0 else []
                    cells.append(f"{value} [{', '.join(str(k + 1) for k in marks)}]" if marks else value)
                else:
                    text = self.formats[col](value)
                    low = best[col].get(self._group(i - self.first_ranked_row, col)) \
                        if i >= self.first_ranked_row else None
                    marked = low is not None and text == self.formats[col](low)  # ties at the printed precision
                    cells.append(bold(text) if marked else text)
            out.append(cells)
        return out

    def _footnotes(self) -> list[str]:
        return [f"[{k}] {note}" for k, note in enumerate(self.notes, 1)]

    def markdown(self) -> str:
        lines = ["| " + " | ".join(self.header) + " |", "|" + "|".join(
            ":---" if c == 0 else "---:" for c in range(len(self.header))) + "|"]
        lines += ["| " + " | ".join(cells) + " |" for cells in self._cells(lambda t: f"**{t}**", "–")]
        lines += [line for note in self._footnotes() for line in ("", note)]
        return "\n".join(lines) + "\n"

    def latex(self) -> str:
        def esc(text: str) -> str:
            return text.replace("\\", "\\textbackslash{}").replace("_", "\\_").replace("%", "\\%").replace("&", "\\&")

        cells = self._cells(lambda t: f"\\textbf{{{t}}}", "--")
        lines = [f"\\begin{{tabular}}{{l{'r' * (len(self.header) - 1)}}}", "\\toprule",
                 " & ".join(esc(h) for h in self.header) + " \\\\", "\\midrule"]
        for i, row in enumerate(cells):
            lines.append(" & ".join(c if c.startswith("\\textbf") else esc(c) for c in row) + " \\\\")
            if i + 1 == self.first_ranked_row:
                lines.append("\\midrule")
        lines += ["\\bottomrule", "\\end{tabular}"]
        lines += [esc(note) + " \\\\" for note in self._footnotes()]
        return "\n".join(lines) + "\n"

    def csv(self) -> str:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        noted = bool(self.notes)
        writer.writerow(self.header + (["note"] if noted else []))
        for i, row in enumerate(self.rows):
            marks = self.row_notes[i] if noted and self.row_notes else []
            writer.writerow(["" if v is None else (f"{v:.6g}" if isinstance(v, float) else v) for v in row]
                            + (["; ".join(self.notes[k] for k in marks)] if noted else []))
        return buffer.getvalue()


def load_results(paths: Sequence[str | Path]) -> list[dict]:
    """Results files of ``pushpull eval``, with a clear error for anything else."""
    out = []
    for path in paths:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"results file not found: {path}")
        data = read_json(path)
        if not isinstance(data, dict) or data.get("format") != "pushpull-robustness-results":
            raise ValueError(f"{path} is not a pushpull results file (no 'format': 'pushpull-robustness-results')")
        out.append(data)
    return out


def _aa(results: dict) -> int:
    return int((results["model"].get("model_kwargs") or {}).get("aa", 0) or 0)


def _n(results: dict) -> int | None:
    return results["data"].get("num_evaluated")


def _flip_rule(results: dict) -> str | None:
    """The flip rule of a run's -P results (None without any)."""
    return (results.get("settings") or {}).get("flip_rule") if results.get("perturbations") else None


def run_names(runs: Sequence[dict]) -> list[str]:
    """A name per run that tells it apart in a report: its label (``pushpull eval --label``, else the
    model's name), plus, where runs share that name and anti-aliasing filter, whichever of the
    weights' digest, flip rule and n differ between them; runs still alike are numbered."""
    base = [r["model"].get("label") or r["model"]["name"] for r in runs]
    facts = [[("weights " + (r["model"].get("weights_sha256") or "?")[:8]),
              (f"{_flip_rule(r)} flips" if _flip_rule(r) else "no -P"), f"n={_n(r)}"] for r in runs]
    names = []
    for i, r in enumerate(runs):
        twins = [j for j in range(len(runs)) if base[j] == base[i] and _aa(runs[j]) == _aa(r)]
        parts = [fact for k, fact in enumerate(facts[i]) if len({facts[j][k] for j in twins}) > 1]
        names.append(base[i] + (f" ({', '.join(parts)})" if parts else ""))
    seen: dict[tuple[str, int], int] = {}
    for i, r in enumerate(runs):
        key = (names[i], _aa(r))
        seen[key] = seen.get(key, 0) + 1
        names[i] += f" #{seen[key]}" if seen[key] > 1 else ""
    return names


OFFICIAL_DATA_NOTE = ("clean test data differ from the official release (checksums): "
                      "do not compare with published numbers")


UNFINISHED_NOTE = "an unfinished run (interrupted): what it did before it stopped; rerun its `pushpull eval` to finish"


def data_notes(results: dict) -> list[str]:
    """What a reader must know about a run's data: its ``data.notes`` (e.g. fewer images than asked,
    a test file that is not the official one), that its clean data are not the official release
    when ``data.official`` is false and no note says so, and that the run did not finish."""
    data = results.get("data") or {}
    notes = [str(n) for n in data.get("notes") or []]
    if data.get("official") is False and not any("official" in n for n in notes):
        notes.append(OFFICIAL_DATA_NOTE)
    if results.get("complete") is False:
        notes.append(UNFINISHED_NOTE)
    return notes


def _footnotes(runs: Sequence[dict]) -> tuple[list[str], list[list[int]]]:
    """The distinct data notes of ``runs`` (in order first seen) and, per run, the indices of its own."""
    notes = list(dict.fromkeys(n for r in runs for n in data_notes(r)))
    return notes, [[notes.index(n) for n in data_notes(r)] for r in runs]


def build_tables(runs: list[dict], baseline: Baseline | None) -> list[Table]:
    """The summary, per-corruption and per-perturbation tables of ``runs``.

    Each row gives the run's n and (where it has -P results) flip rule; "best" is decided among
    rows of the same n (errors) or the same n and flip rule (flip probabilities and rates)."""
    corruptions, perturbations = metrics.benchmark_names()
    summaries = [metrics.summarize(r, baseline, corruptions=corruptions, perturbations=perturbations) for r in runs]
    c_cols = _columns(corruptions, _union(s["corruptions"] for s in summaries))
    p_cols = _columns(perturbations, _union(s["perturbations"] for s in summaries))
    any_aa = any(_aa(r) for r in runs)
    names = run_names(runs)
    notes, marks = _footnotes(runs)
    first = 1 if baseline else 0
    row_notes = [[]] * first + marks

    def lead(i: int, flips: bool) -> list[Cell]:
        r = runs[i]
        aa = [AA_FILTERS.get(_aa(r), str(_aa(r))) if _aa(r) else ""] if any_aa else []
        return [names[i], *aa, str(_n(r))] + ([_flip_rule(r)] if flips else [])

    def head(flips: bool) -> list[str]:
        return ["Network"] + (["AA"] if any_aa else []) + ["n"] + (["flip rule"] if flips else [])

    def base_lead(flips: bool) -> list[Cell]:
        return [baseline.name] + ([""] if any_aa else []) + [None] * (2 if flips else 1)

    def groups(flips: bool, kinds: str) -> list[list[Hashable]]:
        """Per run and column: e (compare by n), f (by n and flip rule), - (text)."""
        lead_kinds = "-" * len(head(flips))
        return [[None if k == "-" else (_n(r), _flip_rule(r) if k == "f" else None) for k in lead_kinds + kinds]
                for r in runs]

    ratio, prob = (lambda v: f"{v:.2f}"), (lambda v: f"{v:.4f}")
    pct = ratio  # errors enter the tables in % (so the CSV agrees with the header)
    ids = range(len(runs))
    summary = Table("summary", head(True) + ["E (%)", "mCE", "rCE", "mFR"],
                    [lead(i, True) + [_percent(s["error"]), s["mCE"], s["rCE"], s["mFR"]]
                     for i, s in zip(ids, summaries)],
                    [str] * len(head(True)) + [pct, ratio, ratio, ratio], first, groups(True, "eeef"), notes,
                    row_notes)
    corr = Table("corruptions", head(False) + ["clean (%)"] + c_cols,
                 [lead(i, False) + [_percent(s["error"])]
                  + [_percent(s["corruptions"].get(c, {}).get("ce_unnormalized")) for c in c_cols]
                  for i, s in zip(ids, summaries)], [str] * len(head(False)) + [pct] * (1 + len(c_cols)), first,
                 groups(False, "e" * (1 + len(c_cols))), notes, row_notes)
    pert = Table("perturbations", head(True) + p_cols,
                 [lead(i, True) + [s["perturbations"].get(p, {}).get("fp") for p in p_cols]
                  for i, s in zip(ids, summaries)],
                 [str] * len(head(True)) + [prob] * len(p_cols), first, groups(True, "f" * len(p_cols)), notes,
                 row_notes)
    if baseline:
        summary.rows.insert(0, base_lead(True) + [_percent(baseline.clean_error), 1.0, 1.0, 1.0])
        corr.rows.insert(0, base_lead(False) + [_percent(baseline.clean_error)]
                         + [_percent(_mean_error(baseline, c)) for c in c_cols])
        pert.rows.insert(0, base_lead(True) + [baseline.flip_probabilities.get(p) for p in p_cols])
    return [summary, corr, pert]


def _percent(value: float | None) -> float | None:
    return None if value is None else 100 * value


def _mean_error(baseline: Baseline, corruption: str) -> float | None:
    errors = baseline.errors_for(corruption, ALL_SEVERITIES)
    return None if errors is None else float(errors.mean())


def _columns(benchmark: Sequence[str], evaluated: list[str]) -> list[str]:
    """The names evaluated: the benchmark's in its order, then the others in the order first seen."""
    return [n for n in benchmark if n in evaluated] + [n for n in evaluated if n not in benchmark]


def _union(dicts) -> list[str]:  # noqa: ANN001 - an iterable of dicts
    seen: dict[str, None] = {}
    for d in dicts:
        seen.update(dict.fromkeys(d))
    return list(seen)


def plot_ce_fp(runs: list[dict], path_stem: Path) -> list[Path]:
    """Figure 3: mean CE (%) vs mean FP, colour = run, marker = anti-aliasing filter; PNG and SVG.

    A run with only -P results is a dashed horizontal line at its mean FP, one with only -C a dotted
    vertical line at its mean CE; the legend gives n and flip rule when the runs differ in them; data notes are footnoted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    corruptions, perturbations = metrics.benchmark_names()
    names, (notes, marks) = run_names(runs), _footnotes(runs)
    sizes, rules = {_n(r) for r in runs}, {_flip_rule(r) for r in runs} - {None}
    uniform = len(sizes) == 1 and len(rules) <= 1  # then the title says n and flip rule once
    points = []  # (legend label, aa, CE % or None, FP or None)
    for name, r, mark in zip(names, runs, marks):
        s = metrics.summarize(r, None, corruptions=corruptions, perturbations=perturbations)
        ce, fp = s["mean_ce_unnormalized"], s["mFP"]
        if ce is None and fp is None:
            continue
        extra = [] if uniform else [f for f in (f"n={_n(r)}", f"{_flip_rule(r)} flips" if fp is not None else "")
                                    if f and f not in name]
        label = name + (f" ({', '.join(extra)})" if extra else "") \
            + (f" [{', '.join(str(k + 1) for k in mark)}]" if mark else "")
        points.append((label, _aa(r), None if ce is None else 100 * ce, fp))
    if not points:
        raise ValueError("Figure 3 needs results with all 15 benchmark corruptions or all 10 perturbations")
    labels = list(dict.fromkeys(p[0] for p in points))
    colours = plt.get_cmap("tab10" if len(labels) <= 10 else "tab20")
    fig, ax = plt.subplots(figsize=(6.4, 4.8), dpi=150)
    for label, aa, ce, fp in points:
        colour = colours(labels.index(label) % colours.N)
        if ce is not None and fp is not None:
            ax.scatter(ce, fp, s=70, marker=AA_MARKERS.get(aa, "X"), color=colour, edgecolors="black",
                       linewidths=0.6, zorder=3)
        elif ce is None:
            ax.axhline(fp, color=colour, linestyle="--", linewidth=1.2, zorder=2)
        else:
            ax.axvline(ce, color=colour, linestyle=":", linewidth=1.4, zorder=2)
    ax.set_xlabel("mean corruption error CE (%)")
    ax.set_ylabel("mean flip probability FP")
    subtitle = ""
    if uniform:
        subtitle = f"\nall runs: n = {next(iter(sizes))} test images" + "".join(f", {r} flip rule" for r in rules)
    ax.set_title("Corruption error vs flip probability (lower left is better)" + subtitle, fontsize=10)
    ax.grid(True, linestyle=":", linewidth=0.6, zorder=0)
    ax.margins(0.12)

    def handle(label: str) -> Line2D:
        kinds = {(ce is None, fp is None) for lab, _, ce, fp in points if lab == label}
        colour = colours(labels.index(label) % colours.N)
        if kinds == {(True, False)}:
            return Line2D([], [], color=colour, linestyle="--", label=f"{label}: -P only")
        if kinds == {(False, True)}:
            return Line2D([], [], color=colour, linestyle=":", label=f"{label}: -C only")
        return Line2D([], [], marker="o", linestyle="", markersize=8, markeredgecolor="black", color=colour,
                      label=label)

    used_aa = sorted({p[1] for p in points if p[2] is not None and p[3] is not None})
    aa_handles = [Line2D([], [], marker=AA_MARKERS.get(a, "X"), linestyle="", markersize=8, color="white",
                         markeredgecolor="black", label=AA_FILTERS.get(a, f"aa={a}")) for a in used_aa]
    first = ax.legend(handles=[handle(label) for label in labels], title="run", loc="upper left",
                      bbox_to_anchor=(1.01, 1.0), fontsize=8, title_fontsize=9, frameon=False)
    extra_artists = [first]
    if aa_handles:
        ax.add_artist(first)
        extra_artists.append(ax.legend(handles=aa_handles, title="anti-aliasing", loc="lower left",
                                       bbox_to_anchor=(1.01, 0.0), fontsize=8, title_fontsize=9, frameon=False))
    if notes:
        text = "\n".join(textwrap.fill(f"[{k}] {n}", 110) for k, n in enumerate(notes, 1))
        extra_artists.append(fig.text(0.01, -0.02, text, fontsize=7, va="top", ha="left"))
    fig.tight_layout()
    written = []
    for suffix in (".png", ".svg"):
        path = path_stem.with_suffix(suffix)
        with atomic_path(path) as tmp, plt.rc_context({"svg.fonttype": "none"}):  # SVG text stays text
            fig.savefig(tmp, format=suffix[1:], bbox_inches="tight", bbox_extra_artists=extra_artists)
        written.append(path)
    plt.close(fig)
    return written


def write_report(result_paths: Sequence[str | Path], out_dir: str | Path,
                 baseline: str | Path | Baseline | None = "auto", figure: bool = True) -> list[Path]:
    """Write the tables (md, csv, tex) and Figure 3 (png, svg) to ``out_dir``; return the paths."""
    runs = load_results(result_paths)
    if baseline == "auto":
        baseline = default_baseline(f"{runs[0]['data']['dataset']}-c")
    base = load_baseline(baseline) if baseline else None
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for table in build_tables(runs, base):
        for suffix, text in ((".md", table.markdown()), (".csv", table.csv()), (".tex", table.latex())):
            path = out_dir / f"{table.name}{suffix}"
            atomic_write(path, text)
            written.append(path)
    if figure:
        try:
            written += plot_ce_fp(runs, out_dir / "fig3")
        except ValueError as exc:
            warnings.warn(f"Figure 3 skipped: {exc}", stacklevel=2)
    return written
