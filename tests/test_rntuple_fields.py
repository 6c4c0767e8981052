"""RNTuple inputs open fast (issue 17 item 5): taggerflow.io primes uproot's per-field subfield
cache in one pass instead of uproot's O(fields^2) scan. The primed lists must be exactly uproot's
own, on coffea's real RNTuple files; and the installed uproot must be one the priming was measured
on, so that an upgrade fails here loudly (re-measure with benchmarks/bench_rntuple.py, then widen
taggerflow.io._RNTUPLE_FIELD_INDEX_UPROOT)."""

from __future__ import annotations

import numpy as np
import pytest
import uproot

from coffea_samples import sample
from taggerflow import io


def _tree(name: str):
    return uproot.open(sample(name))["Events"]


@pytest.mark.parametrize("name", ["nano_dy_rntuple.root", "pfnano_rntuple.root"])
def test_primed_subfields_are_uproots_own(name):
    primed = io.open_tree(sample(name), "Events", direct=True)
    plain = _tree(name)
    assert primed._fields is not None                         # primed on open
    assert all(f._fields is not None for f in primed.all_fields)
    assert [f.name for f in primed.fields] == [f.name for f in plain.fields]
    for ours, theirs in zip(primed.all_fields, plain.all_fields):   # plain computes its own here
        assert [c.name for c in ours.fields] == [c.name for c in theirs.fields], ours.path
    assert primed.keys() == plain.keys()
    assert io.tree_keys(primed) == plain.keys(recursive=False)


def test_reading_through_the_primed_index_is_unchanged():
    path = sample("nano_dy_rntuple.root")
    primed = io.open_tree(path, "Events", direct=True)
    fields = ["nTau", "Tau_pt", "Tau_eta", "Tau_genPartFlav", "Tau_decayMode"]
    ours = primed.arrays(fields, library="np")
    plain = _tree("nano_dy_rntuple.root").arrays(fields, library="np")
    ttree = uproot.open(sample("nano_dy.root"))["Events"].arrays(fields, library="np")
    for f in fields:
        assert [np.asarray(x).tolist() for x in ours[f]] == [np.asarray(x).tolist() for x in plain[f]]
        assert [np.asarray(x).tolist() for x in ours[f]] == [np.asarray(x).tolist() for x in ttree[f]]
    assert int(sum(len(x) for x in ours["Tau_pt"])) == 29


def test_installed_uproot_is_in_the_measured_range():
    low, high = io._RNTUPLE_FIELD_INDEX_UPROOT
    version = tuple(int(p) for p in uproot.__version__.split(".")[:2])
    assert low <= version < high, (f"uproot {uproot.__version__} is outside the range the RNTuple field "
                                   f"index was checked on; re-run benchmarks/bench_rntuple.py")
