"""Trainings compared (CompareTrainings): the best epoch of each, one table of their numbers, and
their ROC, loss and KS-vs-epoch curves overlaid, in one markdown report.

numpy and matplotlib only. Every number comes from the files each training and evaluation wrote:
the epochs from history.csv (0-based, as written), the AUCs, ROC curves and rejections from the
Evaluation's metrics.json (so they are exactly Evaluation's), the KS statistics from the ks_<class>
columns the adversarial training writes (absent columns: no KS in the table, no KS plot).

The best epoch of a training: the one its selection record (selection.json of the adversarial
training) chose; otherwise by the criterion the variant configures: ``adversary.select_by`` among
the epochs passing ``adversary.ks_cut``, or for a plain training the early-stopping monitor
(val_loss, or loss without validation). The plain training exports its last epoch, so the table
also says which epoch the evaluated model is.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Sequence

from taggerflow import plotting
from taggerflow.adversary_config import DEFAULTS as ADVERSARY_DEFAULTS, SELECT_BY
from taggerflow.utils import read_json, write_json

KS_PREFIX, KS_PVALUE_PREFIX = "ks_", "ks_pvalue_"


def read_history(path: str) -> list[dict]:
    """history.csv as rows of numbers: epoch an int, every other column a float (NaN for 'NA')."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or "epoch" not in rows[0]:
        raise ValueError(f"{path}: no epochs (expected a header with 'epoch' and one row per epoch)")
    out = []
    for i, r in enumerate(rows):
        try:
            out.append({k: int(v) if k == "epoch" else _number(v) for k, v in r.items()})
        except ValueError as e:
            raise ValueError(f"{path}: row {i + 1}: {e}") from None
    return out


def _number(v) -> float:
    return float("nan") if v in (None, "", "NA") else float(v)


def ks_outputs(history: Sequence[dict]) -> list[str]:
    """The classes with a KS column (ks_<class>) in the history, in column order."""
    if not history:
        return []
    return [k[len(KS_PREFIX):] for k in history[0] if k.startswith(KS_PREFIX) and not k.startswith(KS_PVALUE_PREFIX)]


def best_epoch(history: Sequence[dict], variant: dict, selection: dict | None = None) -> dict:
    """{epoch, select_by, value, reason}: the selection record's choice where there is one, else the
    variant's criterion (see the module docstring); first epoch on ties."""
    if selection and selection.get("chosen"):
        c = selection["chosen"]
        return {"epoch": int(c["epoch"]), "select_by": c["select_by"], "value": float(c["value"]),
                "reason": f"selection record: {c['reason']}"}
    adv = variant.get("adversary")
    cut = (adv or {}).get("ks_cut")
    if adv:
        by = {**ADVERSARY_DEFAULTS, **adv}["select_by"]  # a stored config.json: defaults may be absent
        key = f"ks_{cut['output']}" if by == "ks" else by
    else:
        by = key = "val_loss" if "val_loss" in history[0] else "loss"
    missing = [k for k in {key, *([f"ks_{cut['output']}"] if cut else [])} if k not in history[0]]
    if missing:
        raise ValueError(f"training '{variant.get('name')}': history has no column {missing[0]} "
                         f"(its criterion); columns: {', '.join(history[0])}")
    passing = history
    what = f"{len(history)} epochs"
    if cut:
        ks_key = f"ks_{cut['output']}"
        passing = [r for r in history if r[ks_key] < float(cut["max"])]
        what = f"{len(passing)} epochs with {ks_key} < {cut['max']}"
        if not passing:
            last = history[-1]
            return {"epoch": int(last["epoch"]), "select_by": key, "value": float(last[key]),
                    "reason": f"no epoch has {ks_key} < {cut['max']}: the last one"}
    sign = 1.0 if SELECT_BY.get(by, "min") == "min" else -1.0
    best = min(passing, key=lambda r: (sign * r[key], r["epoch"]))
    word = "lowest" if sign > 0 else "highest"
    return {"epoch": int(best["epoch"]), "select_by": key, "value": float(best[key]),
            "reason": f"{word} {key} = {best[key]:.6g} of {what}"}


def model_type(variant: dict) -> str:
    """'deepsets', 'rnn (lstm)', 'dense + adversary (lambda 10)'."""
    model = variant.get("model") or {}
    name = str(model.get("type", "?"))
    cell = model.get("cell", "lstm") if name == "rnn" else None
    if cell:
        name += f" ({cell})"
    adv = variant.get("adversary")
    if adv:
        name += f" + adversary (lambda {adv.get('lambda')})"
    return name


def training_row(history: Sequence[dict], summary: dict, metrics: dict, variant: dict,
                 selection: dict | None = None) -> dict:
    """One training's numbers for the table and summary.json."""
    best = best_epoch(history, variant, selection)
    row = history[[int(r["epoch"]) for r in history].index(best["epoch"])]
    if selection or summary.get("chosen") or variant.get("adversary"):
        evaluated = best["epoch"]   # the adversarial training exports its chosen epoch
    else:
        evaluated = int(history[-1]["epoch"])   # the plain training exports its last
    pairs = metrics["pairs"]
    out = {"model_type": model_type(variant), "best_epoch": best, "evaluated_epoch": evaluated,
           "epochs_run": len(history), "val_loss": _clean(row.get("val_loss")),
           "auc": {p: m["auc"] for p, m in pairs.items()},
           "rejection": {p: {wp: w["background_rejection"] for wp, w in m["working_points"].items()}
                         for p, m in pairs.items()},
           "ks": {c: _clean(row[f"ks_{c}"]) for c in ks_outputs(history)},
           "ks_pvalue": {c: _clean(row[f"{KS_PVALUE_PREFIX}{c}"]) for c in ks_outputs(history)
                         if f"{KS_PVALUE_PREFIX}{c}" in row}}
    if metrics.get("weighted"):
        out["weighted"] = True
    return out


def _clean(v):
    """NaN (a metric an epoch lacks) -> None (null in JSON)."""
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else v


def _fmt(value, spec: str) -> str:
    if value is None or value != value:
        return "n/a"
    return format(value, spec)


def compare_trainings(trainings: dict[str, dict], report_path: str, summary_path: str, plot_dir: str,
                      title: str = "taggerflow: trainings compared") -> dict:
    """``trainings``: label -> {history, summary, metrics (paths), variant (the trained config), and
    optionally selection (path of a selection record, None or missing: none)}, in table order.
    Writes the report, summary.json (the table's numbers) and the plots; returns the summary."""
    if not trainings:
        raise ValueError("no trainings to compare")
    data = {}
    for label, t in trainings.items():
        history = read_history(t["history"])
        summary, metrics = read_json(t["summary"]), read_json(t["metrics"])
        selection = read_json(t["selection"]) if t.get("selection") and os.path.exists(t["selection"]) else None
        if selection is None and summary.get("chosen"):
            selection = {"chosen": summary["chosen"]}
        data[label] = {"history": history, "metrics": metrics,
                       "row": training_row(history, summary, metrics, t["variant"], selection)}
    pairs = list(next(iter(data.values()))["metrics"]["pairs"])
    for label, d in data.items():
        if list(d["metrics"]["pairs"]) != pairs:
            raise ValueError(f"{trainings[label]['metrics']}: pairs {list(d['metrics']['pairs'])} differ from "
                             f"the first training's {pairs} (another evaluation section?)")
    wps = list(next(iter(data.values()))["metrics"]["pairs"][pairs[0]]["working_points"]) if pairs else []
    ks_classes = [c for c in _union(d["row"]["ks"] for d in data.values())]

    head = ["training", "model", "best epoch (why)", "evaluated epoch", "val loss (best epoch)"]
    head += [f"AUC {p}" for p in pairs]
    head += [f"rejection {p} @ {' / '.join(f'{float(w):.0%}' for w in wps)}" for p in pairs]
    head += [f"KS {c} (best epoch)" for c in ks_classes]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, d in data.items():
        r = d["row"]
        b = r["best_epoch"]
        cells = [label, r["model_type"], f"{b['epoch']} ({b['reason']})", str(r["evaluated_epoch"]),
                 _fmt(r["val_loss"], ".4f")]
        cells += [_fmt(r["auc"][p], ".4f") for p in pairs]
        cells += [" / ".join(_fmt(r["rejection"][p][w], ".1f") for w in wps) for p in pairs]
        cells += [_fmt(r["ks"].get(c), ".4f") for c in ks_classes]
        lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    note = ("Epochs are 0-based, as in history.csv. AUCs and rejections are the Evaluation's (metrics.json) "
            "of the evaluated model, on the test split; the best epoch is chosen on the validation split.")
    weighted = [label for label, d in data.items() if d["row"].get("weighted")]
    if weighted:
        note += f" Weighted by the event weights: {', '.join(weighted)}."
    warnings = "".join(f"> **Warning** ({label}): {w}\n" for label, d in data.items()
                       for w in d["metrics"].get("warnings", []))
    sections = [("Summary", [], (warnings + "\n" if warnings else "") + note + "\n\n" + "\n".join(lines))]

    roc_images = []
    for p in pairs:
        curves = {}
        for label, d in data.items():
            m = d["metrics"]["pairs"][p]
            curves[label] = {**m["roc"], **({} if m["auc"] is None else {"auc": m["auc"]})}
        roc_images.append(plotting.plot_rocs(curves, p, os.path.join(plot_dir, f"roc_{p}.png")))
    sections.append(("ROC curves (ratio to the first training)", roc_images, ""))
    best = {label: d["row"]["best_epoch"]["epoch"] for label, d in data.items()}
    loss_image = plot_curves({label: d["history"] for label, d in data.items()}, ["loss", "val_loss"], best,
                             "loss", os.path.join(plot_dir, "loss.png"))
    sections.append(("Loss per epoch (training dashed, validation solid; the best epoch marked)", [loss_image], ""))
    if ks_classes:
        ks_images = []
        for c in ks_classes:
            with_ks = {label: d["history"] for label, d in data.items() if c in d["row"]["ks"]}
            cuts = {label: float(cut["max"]) for label in with_ks
                    if (cut := (trainings[label]["variant"].get("adversary") or {}).get("ks_cut"))
                    and cut.get("output") == c}
            ks_images.append(plot_curves(with_ks, [f"ks_{c}"], best, f"KS data vs MC, output {c}",
                                         os.path.join(plot_dir, f"ks_{c}.png"), cuts))
        sections.append(("KS between data and MC per epoch (control validation sample)", ks_images, ""))
    plotting.markdown_report(title, sections, report_path)
    summary = {label: d["row"] for label, d in data.items()}
    write_json(summary_path, summary)
    return summary


def _union(dicts) -> list[str]:
    out: list[str] = []
    for d in dicts:
        out += [k for k in d if k not in out]
    return out


def plot_curves(histories: dict[str, Sequence[dict]], keys: Sequence[str], best: dict[str, int], ylabel: str,
                path: str, cuts: dict[str, float] | None = None) -> str:
    """Columns of several histories against epoch, one colour per training; the last of ``keys``
    solid, the others dashed; each training's best epoch marked on the last key's curve, and its
    cut (``cuts``: label -> value, e.g. the KS cut) as a dotted line."""
    from matplotlib.ticker import MaxNLocator

    plt = plotting._plt()
    fig, ax = plt.subplots()
    for i, (label, rows) in enumerate(histories.items()):
        color = f"C{i}"
        epochs = [int(r["epoch"]) for r in rows]
        for j, key in enumerate(keys):
            if key not in rows[0]:
                continue
            solid = j == len(keys) - 1
            ax.plot(epochs, [r[key] for r in rows], "-" if solid else "--", color=color,
                    label=f"{label} {key}" if len(keys) > 1 else label)
            if solid and label in best:
                r = next(r for r in rows if int(r["epoch"]) == best[label])
                ax.plot([best[label]], [r[key]], "*", color=color, markersize=16)
        if cuts and label in cuts:
            ax.axhline(cuts[label], linestyle=":", color=color, label=f"{label} cut")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch (as in history.csv)")
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=10)
    return plotting._save(fig, path)
