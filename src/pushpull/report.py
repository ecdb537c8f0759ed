"""The paper's tables and Figure 3 from results files of ``pushpull eval``.

Tables (each as Markdown, CSV and LaTeX; the best value of each column in bold, the
baseline row excluded):

- ``summary``: E, mCE, rCE, mFR per model (Table 1 style);
- ``corruptions``: clean error and unnormalised CE per corruption, in % (Tables 4-6);
- ``perturbations``: flip probability per perturbation (Tables 7-9).

Figure 3 (``fig3.png``/``.svg``): mean corruption error against mean flip probability,
one colour per model, one marker per anti-aliasing filter (the paper's layout).
"""

from __future__ import annotations

import csv
import io
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
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
    """Rows of cells (in the units the header says) with one formatter per column; each numeric
    column gets its minimum in bold."""

    name: str
    header: list[str]
    rows: list[list[Cell]]
    formats: list[Callable[[float], str]]
    first_ranked_row: int = 0  # rows before it (the baseline) take no part in "best"

    def best(self) -> list[float | None]:
        out = []
        for col in range(len(self.header)):
            values = [r[col] for r in self.rows[self.first_ranked_row:] if isinstance(r[col], (int, float))]
            out.append(min(values) if len(values) > 1 else None)
        return out

    def _cells(self, bold: Callable[[str], str], missing: str) -> list[list[str]]:
        best = self.best()
        out = []
        for i, row in enumerate(self.rows):
            cells = []
            for col, value in enumerate(row):
                if value is None:
                    cells.append(missing)
                elif isinstance(value, str):
                    cells.append(value)
                else:
                    text = self.formats[col](value)
                    marked = (i >= self.first_ranked_row and best[col] is not None
                              and text == self.formats[col](best[col]))  # ties at the printed precision
                    cells.append(bold(text) if marked else text)
            out.append(cells)
        return out

    def markdown(self) -> str:
        lines = ["| " + " | ".join(self.header) + " |", "|" + "|".join(
            ":---" if c == 0 else "---:" for c in range(len(self.header))) + "|"]
        lines += ["| " + " | ".join(cells) + " |" for cells in self._cells(lambda t: f"**{t}**", "–")]
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
        return "\n".join(lines) + "\n"

    def csv(self) -> str:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(self.header)
        writer.writerows([["" if v is None else (f"{v:.6g}" if isinstance(v, float) else v) for v in r]
                          for r in self.rows])
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


def _label(results: dict) -> str:
    label = results["model"].get("label") or results["model"]["name"]
    data = results["data"]
    return label + (f" (n={data['num_evaluated']})" if data.get("limit") else "")


def build_tables(runs: list[dict], baseline: Baseline | None) -> list[Table]:
    """The summary, per-corruption and per-perturbation tables of ``runs``."""
    corruptions, perturbations = metrics.benchmark_names()
    summaries = [metrics.summarize(r, baseline, corruptions=corruptions, perturbations=perturbations) for r in runs]
    c_cols = _columns(corruptions, _union(s["corruptions"] for s in summaries))
    p_cols = _columns(perturbations, _union(s["perturbations"] for s in summaries))
    any_aa = any(_aa(r) for r in runs)

    def lead(r: dict) -> list[Cell]:
        return [_label(r)] + ([AA_FILTERS.get(_aa(r), str(_aa(r))) if _aa(r) else ""] if any_aa else [])

    head = ["Network"] + (["AA"] if any_aa else [])
    ratio, prob = (lambda v: f"{v:.2f}"), (lambda v: f"{v:.4f}")
    pct = ratio  # errors enter the tables in % (so the CSV agrees with the header)
    first = 1 if baseline else 0
    base_lead = [baseline.name] + ([""] if any_aa else []) if baseline else []
    n_lead = len(head)

    summary = Table("summary", head + ["E (%)", "mCE", "rCE", "mFR"],
                    [lead(r) + [_percent(s["error"]), s["mCE"], s["rCE"], s["mFR"]] for r, s in zip(runs, summaries)],
                    [str] * n_lead + [pct, ratio, ratio, ratio], first)
    corr = Table("corruptions", head + ["clean (%)"] + c_cols,
                 [lead(r) + [_percent(s["error"])] + [_percent(s["corruptions"].get(c, {}).get("ce_unnormalized"))
                                                      for c in c_cols]
                  for r, s in zip(runs, summaries)], [str] * n_lead + [pct] * (1 + len(c_cols)), first)
    pert = Table("perturbations", head + p_cols,
                 [lead(r) + [s["perturbations"].get(p, {}).get("fp") for p in p_cols] for r, s in zip(runs, summaries)],
                 [str] * n_lead + [prob] * len(p_cols), first)
    if baseline:
        summary.rows.insert(0, base_lead + [_percent(baseline.clean_error), 1.0, 1.0, 1.0])
        corr.rows.insert(0, base_lead + [_percent(baseline.clean_error)]
                         + [_percent(_mean_error(baseline, c)) for c in c_cols])
        pert.rows.insert(0, base_lead + [baseline.flip_probabilities.get(p) for p in p_cols])
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
    """Figure 3: mean CE (%) vs mean FP, colour = model, marker = anti-aliasing filter; PNG and SVG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    corruptions, perturbations = metrics.benchmark_names()
    points = []
    for r in runs:
        s = metrics.summarize(r, None, corruptions=corruptions, perturbations=perturbations)
        if s["mean_ce_unnormalized"] is not None and s["mFP"] is not None:
            points.append((r["model"]["name"], _aa(r), 100 * s["mean_ce_unnormalized"], s["mFP"]))
    if not points:
        raise ValueError("Figure 3 needs results with all 15 benchmark corruptions and all 10 perturbations")
    families = list(dict.fromkeys(p[0] for p in points))
    colours = plt.get_cmap("tab10" if len(families) <= 10 else "tab20")
    fig, ax = plt.subplots(figsize=(6.4, 4.8), dpi=150)
    for name, aa, ce, fp in points:
        ax.scatter(ce, fp, s=70, marker=AA_MARKERS.get(aa, "X"), color=colours(families.index(name) % colours.N),
                   edgecolors="black", linewidths=0.6, zorder=3)
    ax.set_xlabel("mean corruption error CE (%)")
    ax.set_ylabel("mean flip probability FP")
    ax.set_title("Corruption error vs flip probability (lower left is better)", fontsize=10)
    ax.grid(True, linestyle=":", linewidth=0.6, zorder=0)
    ax.margins(0.12)
    model_handles = [Line2D([], [], marker="o", linestyle="", markersize=8, markeredgecolor="black",
                            color=colours(i % colours.N), label=name) for i, name in enumerate(families)]
    used_aa = sorted({p[1] for p in points})
    aa_handles = [Line2D([], [], marker=AA_MARKERS.get(a, "X"), linestyle="", markersize=8, color="white",
                         markeredgecolor="black", label=AA_FILTERS.get(a, f"aa={a}")) for a in used_aa]
    first = ax.legend(handles=model_handles, title="model", loc="upper left", bbox_to_anchor=(1.01, 1.0),
                      fontsize=8, title_fontsize=9, frameon=False)
    ax.add_artist(first)
    second = ax.legend(handles=aa_handles, title="anti-aliasing", loc="lower left", bbox_to_anchor=(1.01, 0.0),
              fontsize=8, title_fontsize=9, frameon=False)
    fig.tight_layout()
    written = []
    for suffix in (".png", ".svg"):
        path = path_stem.with_suffix(suffix)
        with atomic_path(path) as tmp:
            fig.savefig(tmp, bbox_inches="tight", bbox_extra_artists=(first, second))
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
