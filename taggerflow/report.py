"""The evaluation report: trainings compared (ROC curves with ratio panels, a table of AUCs and
rejections at the working points) and every per-training plot, in one markdown page."""

from __future__ import annotations

import os

from taggerflow import plotting
from taggerflow.paths import portable_path
from taggerflow.utils import read_json, write_json


def write_evaluation_report(results: dict[str, dict[str, str]], report_path: str, summary_path: str,
                            title: str = "taggerflow evaluation") -> dict:
    """results: training name -> output paths of its Evaluation (metrics, plots...)."""
    metrics = {name: read_json(paths["metrics"]) for name, paths in results.items()}
    pairs = list(next(iter(metrics.values()))["pairs"])
    plot_dir = os.path.join(os.path.dirname(report_path), "plots")
    sections = []
    summary: dict = {}
    warnings = {name: m.get("warnings", []) for name, m in metrics.items()}
    rows = ["| training | accuracy | " + " | ".join(f"AUC {p}" for p in pairs) + " |",
            "|---|---|" + "---|" * len(pairs)]
    for name, m in metrics.items():
        rows.append(f"| {name} | {m['accuracy']:.4f} | " + " | ".join(_fmt(m['pairs'][p]['auc'], ".4f") for p in pairs) + " |")
        summary[name] = {"accuracy": m["accuracy"], "auc": {p: m["pairs"][p]["auc"] for p in pairs},
                         "working_points": {p: m["pairs"][p]["working_points"] for p in pairs},
                         "warnings": warnings[name]}
    wp_rows = ["| training | pair | WP (signal eff.) | threshold | background rejection |", "|---|---|---|---|---|"]
    for name, m in metrics.items():
        for p in pairs:
            for wp, w in m["pairs"][p]["working_points"].items():
                wp_rows.append(f"| {name} | {p} | {float(wp):.0%} | {_fmt(w['threshold'], '.4f')} | {_fmt(w['background_rejection'], '.1f')} |")
    # a class absent from the test split leaves its AUCs undefined: said first, not a bare n/a in a table
    notes = "".join(f"> **Warning** ({name}): {w}\n" for name, ws in warnings.items() for w in ws)
    sections.append(("Summary", [], (notes + "\n" if notes else "") + "\n".join(rows) + "\n\n" + "\n".join(wp_rows)))
    if any("signal_scan" in m for m in metrics.values()):   # taggerflow.signal_scan
        from taggerflow.signal_scan import markdown_tables

        sections.append(("S/sqrt(B) and signal efficiency per signal model", [],
                         "\n".join(markdown_tables(name, sc) for name, m in metrics.items()
                                   for sc in m.get("signal_scan", {}).values())))
    roc_images = []
    for p in pairs:
        curves = {name: {**m["pairs"][p]["roc"], **_auc_label(m["pairs"][p]["auc"])} for name, m in metrics.items()}
        roc_images.append(plotting.plot_rocs(curves, p, os.path.join(plot_dir, f"roc_{p}.png")))
    sections.append(("ROC curves (ratio to the first training)", roc_images, ""))
    for name, paths in results.items():
        images = [paths[k] for k in paths if k not in ("predictions", "metrics", "working_points")]
        # as stored (taggerflow.paths): the same page wherever the data directory is
        sections.append((f"Training '{name}'", images,
                         f"predictions: `{portable_path(paths['predictions'])}`, "
                         f"thresholds: `{portable_path(paths['working_points'])}`"))
    plotting.markdown_report(title, sections, report_path)
    write_json(summary_path, summary)
    return summary


def _fmt(value, spec: str) -> str:
    """A table cell: None or NaN (undefined: a class absent from the test split) -> 'n/a'."""
    if value is None or value != value:
        return "n/a"
    return format(value, spec)


def _auc_label(auc) -> dict:
    """The 'auc' of a ROC curve for its legend, left out where undefined."""
    return {} if auc is None or auc != auc else {"auc": auc}
