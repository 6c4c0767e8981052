"""The control sample of the adversarial training (taggerflow.adversarial): candidates of a
background process in a signal-free region, from data and MC, next to the main sample.

The configuration (the ``control`` section, the generated demo datasets) and the *control view*
the control stages run under: taggerflow.control_config.

The control candidates go through the stages of the main sample (Spectrum, ShuffleMergeSpectral,
WriteTrainSample with ``--sample control``) under the control view: the control datasets are the
inputs (format, tree, selection, aliases and features those of the main sample); every candidate is in one pseudo-class (control candidates have
no class: there is no class resampling, the mixing keeps every candidate inside the resampling bins,
in an order fixed by the seed); the scaling is the main sample's (MergeScaling is never run on the
control view); no flattening weights, no extra labels. Its training files carry ``jets/is_data``
(1 data, 0 MC, from the dataset) beside the usual datasets (event weights in ``jets/event_weight``
where the control datasets configure them), split by the same hash of event and dataset.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import numpy as np

from taggerflow.control_config import IS_DATA, control_datasets


# ---------------------------------------------------------------------------------------------
# the training files


def write_control_sample(view, shard_paths: Iterable[str], scaling: dict, outputs: dict[str, str],
                         meta: dict | None = None, weight_counts=None, config_hash: str | None = None) -> dict[str, int]:
    """write_train_sample of the control view, then ``jets/is_data`` (int8: 1 data, 0 MC, from each
    candidate's dataset id) in every file; the files are written under temporary names and renamed
    into place at the end, all three after all three are complete."""
    import h5py

    from taggerflow.resample import dataset_id
    from taggerflow.trainsample import options, write_train_sample

    by_id = {dataset_id(name): int(is_data) for name, is_data in control_datasets(view).items()}
    parts = {s: os.path.join(os.path.dirname(p), f".{os.path.basename(p)}.part") for s, p in outputs.items()}
    for p in parts.values():  # a killed attempt's (we hold the task's lock)
        if os.path.exists(p):
            os.remove(p)
    if weight_counts is not None:
        raise ValueError("the control sample has no flattening weights (control candidates have no class)")
    counts = write_train_sample(view, shard_paths, scaling, parts, meta=meta, config_hash=config_hash)
    opts = options(view)
    comp = {"compression": opts.compression} if opts.compression else {}
    try:
        for p in parts.values():
            with h5py.File(p, "r+") as f:
                ids = f["jets/dataset_id"][:]
                unknown = sorted(set(np.unique(ids).tolist()) - set(by_id))
                if unknown:
                    raise ValueError(f"{p}: dataset ids {unknown[:3]} are no control dataset of the configuration")
                is_data = np.array([by_id[i] for i in ids.tolist()], dtype=np.int8)
                ds = f.create_dataset(IS_DATA, data=is_data, maxshape=(None,),
                                      chunks=(max(1, min(opts.chunk_rows, max(1, len(ids)))),), **comp)
                ds.attrs["description"] = "1: data, 0: MC (control.datasets.<dataset>.is_data)"
    except BaseException:
        for p in parts.values():
            if os.path.exists(p):
                os.remove(p)
        raise
    for s, p in parts.items():
        os.replace(p, outputs[s])
    return counts


def read_control_split(files: Iterable[str], collections: Iterable[str]) -> dict:
    """A control split for train_adversarial from control training files: {"x": model inputs,
    "is_data", "weights" (jets/event_weight, or None), "pt"}."""
    from taggerflow.records import h5_model_inputs, read_h5

    arrays = read_h5(list(files))
    if IS_DATA not in arrays:
        raise ValueError(f"{sorted(files)[0]}: no {IS_DATA}: not a control training file")
    return {"x": h5_model_inputs(arrays, list(collections)), "is_data": arrays[IS_DATA].astype(np.int32),
            "weights": arrays.get("jets/event_weight"), "pt": arrays["jets/pt"].astype(np.float64)}


def read_main_split(files: Iterable[str], collections: Iterable[str], event_weights: bool) -> dict:
    """A main split for train_adversarial from training files: {"x", "y", "weights"} (the event
    weights with ``event_weights``, else None: unit weights)."""
    from taggerflow.records import h5_model_inputs, read_h5

    arrays = read_h5(list(files))
    return {"x": h5_model_inputs(arrays, list(collections)), "y": arrays["jets/labels"].astype(np.int32),
            "weights": arrays["jets/event_weight"] if event_weights else None}
