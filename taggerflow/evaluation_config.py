"""The evaluation settings of a configuration (``evaluation`` section, or its defaults), as the
Training, ConvertLwtnn and Evaluation tasks use them (no law, no heavy imports)."""

from __future__ import annotations

DEFAULT_EVALUATION = {"signals": None, "working_points": [0.5, 0.7, 0.9]}


def evaluation_config(cfg) -> dict:
    ev = dict(cfg.raw.get("evaluation") or DEFAULT_EVALUATION)
    ev["signals"] = ev.get("signals") or cfg.class_names[:1]
    ev["signal_parameters"] = signal_parameters_by_id(cfg)
    return ev


def signal_parameters_by_id(cfg) -> dict:
    """dataset_id -> (name, parameters) of the datasets with signal-model parameters (S/sqrt(B) and
    efficiency maps, taggerflow/signal_scan.py)."""
    from taggerflow.resample import dataset_id

    src = cfg.raw["demo"]["datasets"] if cfg.is_demo else cfg.raw["inputs"]["datasets"]
    return {dataset_id(ds): (ds, spec["parameters"]) for ds, spec in src.items() if spec.get("parameters")}
