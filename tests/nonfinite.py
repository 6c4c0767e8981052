"""A copy of a shard with NaN, +inf and -inf in candidate and constituent variables (test helper).

Real data carries them (2 NaN of btagSip3dSig in PFNano made ConvertLwtnn fail). The values go into
the first test-split candidates that have constituents, bounded and unbounded variables alike; the
unbounded ones (decay_mode, categorical; pfcand_ptype, no_scaling) are written as floats, as
NanoAOD writes them, so that they can hold a NaN or an inf.
"""

from __future__ import annotations

import awkward as ak
import numpy as np
import uproot

#: (candidate branch, constituent branch, value) for the i-th chosen candidate; the constituent
#: value goes to its highest-pt constituent (first after sorting by pt, never truncated away)
INJECTED = [("mass", "pfcand_d0", np.nan), ("mass", "pfcand_d0", np.inf), ("mass", "pfcand_d0", -np.inf),
            ("decay_mode", "pfcand_ptype", np.inf), ("decay_mode", "pfcand_ptype", -np.inf),
            ("decay_mode", "pfcand_ptype", np.nan), ("ip_sig", "pfcand_dz_sig", np.inf),
            ("iso_neutral", "pfcand_dz_sig", -np.inf)]
AS_FLOAT = ("decay_mode", "pfcand_ptype")


def write_nonfinite_shard(cfg, shard: str, path: str) -> list[dict]:
    """Write the copy to ``path``; per injected candidate {event, dataset_id, candidate, constituent,
    value} (candidate/constituent: the variable names, = the branch names without 'pfcand_')."""
    from taggerflow.shards import shard_writer
    from taggerflow.trainsample import split_index

    arr = uproot.open(shard)["candidates"].arrays()
    split = split_index(ak.to_numpy(arr["event"]), ak.to_numpy(arr["dataset_id"]), cfg.raw["train_sample"]["split"])
    n_cons = ak.to_numpy(ak.num(arr["pfcand_pt"]))
    rows = np.flatnonzero((split == 2) & (n_cons > 0))[: len(INJECTED)]
    assert len(rows) == len(INJECTED)
    offsets = np.concatenate([[0], np.cumsum(n_cons)])
    flat_cols = {k: np.array(arr[k], dtype=np.float64 if k in AS_FLOAT else None) for k in arr.fields
                 if not k.startswith("pfcand_")}
    cons_cols = {k: np.array(ak.flatten(arr[k]), dtype=np.float64 if k in AS_FLOAT else None) for k in arr.fields
                 if k.startswith("pfcand_")}
    out = []
    pt = cons_cols["pfcand_pt"]
    for row, (cand_branch, cons_branch, value) in zip(rows, INJECTED):
        lead = offsets[row] + int(np.argmax(pt[offsets[row]:offsets[row + 1]]))
        flat_cols[cand_branch][row] = value
        cons_cols[cons_branch][lead] = value
        out.append({"event": int(arr["event"][row]), "dataset_id": int(arr["dataset_id"][row]),
                    "candidate": cand_branch, "constituent": cons_branch[len("pfcand_"):], "value": value})
    columns = dict(flat_cols)
    for k, v in cons_cols.items():
        columns[k] = ak.unflatten(v, n_cons)
    colls = {"pfcand": [k[len("pfcand_"):] for k in cons_cols]}
    with shard_writer("root", path, "candidates", colls, 100_000, "nonfinite") as w:
        w.extend(ak.Array(columns))
    return out
