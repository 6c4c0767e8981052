"""ShuffleMergeSpectral core: splitting, acceptance, manifests, balance, determinism."""

from __future__ import annotations

import awkward as ak
import numpy as np
import pytest
import uproot

from taggerflow.formats.shards import open_shard
from taggerflow.resample import ResamplingError, acceptance, run_job, split_entries
from taggerflow.spectrum import coarse_counts, file_spectrum, fine_edges
from taggerflow.utils import read_json


def test_split_entries_covers_everything_once():
    files = [("a", 10), ("b", 0), ("c", 7), ("d", 2**33)]
    jobs = split_entries(files, 4)
    sizes = [sum(s.stop - s.start for s in j) for j in jobs]
    total = 10 + 7 + 2**33
    assert sum(sizes) == total
    assert max(sizes) - min(sizes) <= 1
    # contiguous, non-overlapping, in file order
    seen = {}
    for job in jobs:
        for s in job:
            seen.setdefault(s.path, []).append((s.start, s.stop))
    for path, n in files:
        ranges = sorted(seen.get(path, []))
        covered = 0
        for a, b in ranges:
            assert a == covered
            covered = b
        assert covered == n
    assert split_entries([("a", 3)], 5)[4] == []  # more jobs than entries: empty jobs, nothing lost


def test_acceptance_flattens_and_balances():
    counts = {"A": np.array([[[100, 50], [25, 10]], [[400, 200], [100, 40]]], dtype=np.int64),
              "B": np.array([[[10, 10], [10, 10]], [[0, 0], [0, 0]]], dtype=np.int64)}
    P, p = acceptance(counts, ["sig", "bkg"], {"sig": 1, "bkg": 1}, False, [0, 1, 2], [0, 1, 2])
    exp_A = counts["A"] * P["A"]
    # every bin of a (dataset, class) yields the count of its least populated bin
    np.testing.assert_allclose(exp_A[0], 10)
    np.testing.assert_allclose(exp_A[1], 40)
    assert P["B"][1].sum() == 0  # B provides no bkg
    expected = [(counts[d] * P[d])[t].sum() * p[t] for d in counts for t in range(2)]
    sig = expected[0] + expected[2]
    bkg = expected[1] + expected[3]
    assert sig == pytest.approx(bkg)
    assert max(p) == pytest.approx(1.0)

    # -1: take all of that class
    P2, p2 = acceptance(counts, ["sig", "bkg"], {"sig": -1, "bkg": 1}, False, [0, 1, 2], [0, 1, 2])
    assert np.all(P2["A"][0] == 1) and p2[0] == 1


def test_acceptance_errors():
    counts = {"A": np.array([[[5, 0], [1, 1]], [[1, 1], [1, 1]]])}
    with pytest.raises(ResamplingError, match=r"group 'A', class 'sig': empty bin pt \[0, 1\) x \|eta\| \[1, 2\)"):
        acceptance(counts, ["sig", "bkg"], {"sig": 1, "bkg": 1}, False, [0, 1, 2], [0, 1, 2])
    P, _ = acceptance(counts, ["sig", "bkg"], {"sig": 1, "bkg": 1}, True, [0, 1, 2], [0, 1, 2])
    assert P["A"][0, 0, 1] == 0
    none = {"A": np.array([[[5, 5]], [[0, 0]]])}
    with pytest.raises(ResamplingError, match="class 'bkg' has ratio 1 but no group provides"):
        acceptance(none, ["sig", "bkg"], {"sig": 1, "bkg": 1}, False, [0, 1], [0, 1, 2])


def _plan(cfg, files):
    rs = cfg.raw["resampling"]
    pt_e, eta_e = fine_edges(cfg)
    coarse, per_ds = {}, {}
    spectra_entries = {}
    for ds, path in files.items():
        res = file_spectrum(cfg, path)
        counts = np.stack([res["hists"][c].values(flow=True) for c in cfg.class_names]).astype(np.int64)
        coarse[ds] = coarse_counts(counts, pt_e, eta_e, rs["pt_bins"], rs["eta_bins"])
        per_ds[ds] = [(path, res["entries"])]
        spectra_entries[path] = res["entries"]
    P, p = acceptance(coarse, cfg.class_names, rs["class_ratio"], False, rs["pt_bins"], rs["eta_bins"])
    return P, p, per_ds, spectra_entries


def test_run_job_manifests_balance_and_determinism(files_config, demo_files, tmp_path):
    cfg = files_config
    P, p, per_ds, entries = _plan(cfg, demo_files)
    n_jobs = 2
    manifests = []
    for j in range(n_jobs):
        segs = {ds: split_entries(f, n_jobs)[j] for ds, f in per_ds.items()}
        manifests.append(run_job(cfg, j, segs, P, p, str(tmp_path / f"s{j}.root"), str(tmp_path / f"m{j}.json")))
    # nothing lost: read = accepted + rejected + unlabelled per file; reads sum to the spectrum's entries
    reads = {}
    for m in manifests:
        for path, e in m["files"].items():
            assert e["read"] == sum(e["accepted"].values()) + sum(e["rejected"].values()) + e["unlabelled"]
            reads[path] = reads.get(path, 0) + e["read"]
    assert reads == {cfg.stored_input_path(path, ds): n for ds, fs in per_ds.items() for path, n in fs}
    # written shard content agrees with the manifest, all branches kept plus the new ones
    labels = []
    for j, m in enumerate(manifests):
        t = uproot.open(str(tmp_path / f"s{j}.root"))["candidates"]
        assert t.num_entries == m["entries_written"]
        assert {"class_label", "dataset_id", "dataset_group_id", "pfcand_pt", "npfcand", "iso_charged"} <= set(t.keys())
        labels.append(t["class_label"].array(library="np"))
        assert read_json(str(tmp_path / f"m{j}.json"))["entries_written"] == m["entries_written"]
    labels = np.concatenate(labels)
    frac = np.bincount(labels, minlength=4) / len(labels)
    np.testing.assert_allclose(frac, 0.25, atol=0.05)
    # datasets are mixed: no long runs of one dataset in the output
    ids = uproot.open(str(tmp_path / "s0.root"))["candidates"]["dataset_id"].array(library="np")
    runs = np.diff(np.flatnonzero(np.diff(ids) != 0))
    assert len(np.unique(ids)) == len(demo_files) and runs.max() < 40

    # same inputs and seed: identical content; another job index: a different permutation
    segs = {ds: split_entries(f, n_jobs)[0] for ds, f in per_ds.items()}
    run_job(cfg, 0, segs, P, p, str(tmp_path / "again.root"), str(tmp_path / "again.json"))
    a = uproot.open(str(tmp_path / "s0.root"))["candidates"].arrays(library="ak")
    b = uproot.open(str(tmp_path / "again.root"))["candidates"].arrays(library="ak")
    assert ak.to_list(a) == ak.to_list(b)


# ---------------------------------------------------------------------------------------------
# data groups, TauMLTools semantics, mixing, reproducibility, bad input
import copy  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402

from conftest import tiny_raw  # noqa: E402

from taggerflow.config import ConfigError, config_from_dict  # noqa: E402
from taggerflow.demo import EVENT_STRIDE, generate_demo_file  # noqa: E402
from taggerflow.io import InputError, Segment  # noqa: E402
from taggerflow.resample import (assign_groups, dataset_id, group_id, id_maps, plan_job,  # noqa: E402
                                 shard_suffix)
from taggerflow.spectrum import load_spectrum, write_spectrum  # noqa: E402

FRACTIONS = {"tau": 0.3, "e": 0.2, "mu": 0.2, "jet": 0.3}


@pytest.fixture(scope="module")
def big_files(tmp_path_factory):
    """Five demo files: 'A' (3 files of 4000, distinct file indices) and 'B' (2 files of 2500)."""
    d = tmp_path_factory.mktemp("groups")
    files = []
    for i in range(3):
        p = str(d / "A" / f"A_{i}.root")
        generate_demo_file(p, "A", 4000, FRACTIONS, 40.0, 1.2, seed=11 + i, file_index=i, chunk_size=1000)
        files.append(("A", p))
    for i in range(2):
        p = str(d / "B" / f"B_{i}.root")
        generate_demo_file(p, "B", 2500, FRACTIONS, 30.0, 1.4, seed=21 + i, file_index=10 + i, chunk_size=1000)
        files.append(("B", p))
    return files


def _cfg(files, tmp_path, **resampling):
    raw = tiny_raw()
    del raw["demo"]
    datasets = {}
    for ds, p in files:
        datasets.setdefault(ds, {"files": []})["files"].append(p)
    raw["inputs"]["datasets"] = datasets
    raw["inputs"]["chunk_size"] = 1500
    raw["resampling"].update(resampling)
    raw["resampling"].pop("groups", None) if "groups" not in resampling else None
    return config_from_dict(raw, str(tmp_path / "cfg.yaml"))


def _spectra(cfg, files):
    out = []
    for ds, p in files:
        r = file_spectrum(cfg, p, ds)
        pt_e, eta_e = fine_edges(cfg)
        out.append({"dataset": ds, "path": p, "entries": r["entries"], "candidates": r["candidates"],
                    "counts_flow": np.stack([r["hists"][c].values(flow=True) for c in cfg.class_names]),
                    "pt_edges": pt_e, "abs_eta_edges": eta_e})
    return out


def _run_all(cfg, files, out, n_jobs=None):
    spectra = _spectra(cfg, files)
    n_jobs = n_jobs or cfg.raw["resampling"]["n_jobs"]
    ms = []
    for j in range(n_jobs):
        plan = plan_job(cfg, spectra, j, n_jobs)
        ms.append(run_job(cfg, j, plan.segments, plan.P, plan.p_class, str(out / f"shard_{j}{shard_suffix(cfg)}"),
                          str(out / f"manifest_{j}.json"), group_classes=plan.group_classes, N=plan.N,
                          ids_path=str(out / f"ids_{j}.json")))
    return spectra, ms


def _shard(path, branches=None):
    with open_shard(path, "candidates") as shard:
        return shard.read(0, shard.num_entries, branches if branches is not None else shard.tree.keys())


def test_groups_match_dataset_and_file_regex(tmp_path):
    files = [("DY", "/d/DY/DY_0.root"), ("DY", "/d/DY/DY_1.root"), ("TT", "/d/TT/TT_0.root"),
             ("TT", "root://eos.example.org//store/TT/TT_1.root")]
    groups = [{"name": "first", "dataset": "DY", "file": r"DY_0\.root", "classes": ["tau", "jet"]},
              {"name": "rest", "dataset": "DY|TT", "file": r".*_1\.root|TT_0\.root", "classes": ["tau", "e", "mu", "jet"]}]
    cfg = _cfg(files, tmp_path, groups=groups)
    got = assign_groups(cfg, files)
    assert got == {"first": [files[0]], "rest": files[1:]}  # the URL's file name is matched
    # regexes match fully: 'D' is not 'DY'
    cfg2 = _cfg(files, tmp_path, groups=[dict(groups[0], dataset="D"), groups[1]])
    with pytest.raises(ResamplingError, match=r"DY_0.root \(dataset 'DY'\): matches no group"):
        assign_groups(cfg2, files)
    cfg3 = _cfg(files, tmp_path, groups=[groups[0], dict(groups[1], file=".*")])
    with pytest.raises(ResamplingError, match="matches several groups"):
        assign_groups(cfg3, files)
    # a class in the ratio that no group provides is a config error naming the class
    with pytest.raises(ConfigError, match="resampling.class_ratio.e: no group in resampling.groups provides class 'e'"):
        _cfg(files, tmp_path, groups=[groups[0]])
    with pytest.raises(ResamplingError, match="class 'e' is in resampling.class_ratio"):
        acceptance({"g": np.ones((2, 1, 1))}, ["tau", "e"], {"tau": 1, "e": 1}, False, [0, 1], [0, 1],
                   group_classes={"g": ["tau"]})


def test_stable_ids_and_maps(tmp_path):
    assert dataset_id("DY") == int.from_bytes(hashlib.blake2b(b"DY", digest_size=8).digest(), "little", signed=True)
    assert group_id("DY") == dataset_id("group:DY") != dataset_id("DY")
    cfg = _cfg([("DY", "/x/DY_0.root"), ("TT", "/x/TT_0.root")], tmp_path)
    m = id_maps(cfg)
    assert m["dataset_ids"] == {"DY": dataset_id("DY"), "TT": dataset_id("TT")}
    assert m["dataset_group_ids"] == {"DY": group_id("DY"), "TT": group_id("TT")}


def test_acceptance_expected_counts_are_flat():
    rng = np.random.default_rng(1)
    N = {"g1": rng.integers(50, 5000, size=(2, 4, 3)), "g2": rng.integers(10, 900, size=(2, 4, 3))}
    P, p = acceptance(N, ["a", "b"], {"a": 1, "b": 2}, False, [0, 1, 2, 3, 4], [0, 1, 2, 3])
    for g in N:
        for t in range(2):
            exp = N[g][t] * P[g][t]
            np.testing.assert_allclose(exp, N[g][t].min())  # every bin yields N_min
    E = sum((N[g] * P[g]).sum(axis=(1, 2)) for g in N)
    assert p[1] * E[1] == pytest.approx(2 * p[0] * E[0])  # class ratio 1:2
    assert max(p) == pytest.approx(1.0)


@pytest.mark.parametrize("D", [0.05, 1.0, 50.0])
def test_lastbin_takeall_and_disbalance(D):
    n = np.array([[[400, 200], [100, 50], [30, 10]]], dtype=np.int64)  # 3 pt bins x 2 eta bins, one class
    P, p = acceptance({"g": n}, ["a"], {"a": 1}, False, [0, 1, 2, 3], [0, 1, 2],
                      lastbin_takeall=True, lastbin_disbalance=D)
    assert np.all(P["g"][0, -1] == 1)  # the last pt bin is taken whole
    low = n[0, :-1]
    s = min(1.0, D * n[0, -1].sum() / (low.size * low.min()))
    np.testing.assert_allclose(n[0, :-1] * P["g"][0, :-1], s * low.min())
    # the low-pt region yields at most D times the high-pt count
    assert (n[0, :-1] * P["g"][0, :-1]).sum() <= D * n[0, -1].sum() + 1e-9
    # an empty last bin leaves nothing to balance against
    n0 = n.copy()
    n0[0, -1] = 0
    with pytest.raises(ResamplingError, match=r"last pt bin \[2, 3\) is empty"):
        acceptance({"g": n0}, ["a"], {"a": 1}, False, [0, 1, 2, 3], [0, 1, 2], lastbin_takeall=True,
                   lastbin_disbalance=D)
    # the disbalance has one default, the schema's: the core function does not invent one
    with pytest.raises(ValueError, match="lastbin_disbalance"):
        acceptance({"g": n}, ["a"], {"a": 1}, False, [0, 1, 2, 3], [0, 1, 2], lastbin_takeall=True)


def test_job_accepts_flat_spectrum_and_takeall(big_files, tmp_path):
    files = big_files[:3]
    cfg = _cfg(files, tmp_path, n_jobs=1, class_ratio={"tau": -1, "e": 1, "mu": 1, "jet": 1},
               pt_bins=[20, 40, 70, 1000], eta_bins=[0.0, 1.0, 2.3], lastbin_takeall=True, lastbin_disbalance=2.0)
    spectra, (m,) = _run_all(cfg, files, tmp_path, 1)
    plan = plan_job(cfg, spectra, 0, 1)
    out = _shard(str(tmp_path / "shard_0.root"), ["pt", "eta", "class_label"])
    lab, pt = ak.to_numpy(out["class_label"]), ak.to_numpy(out["pt"])
    # tau has ratio -1: every tau is kept; the class with p = 1 keeps its whole last pt bin
    n_tau = sum(e["accepted"]["tau"] + e["rejected"]["tau"] for e in m["files"].values())
    assert np.count_nonzero(lab == 0) == n_tau
    top = int(np.argmax(plan.p_class[1:])) + 1
    assert plan.p_class[top] == 1.0
    n_top_last = plan.N["A"][top, -1].sum()
    assert np.count_nonzero((lab == top) & (pt >= 70)) == n_top_last
    # below the last pt bin, accepted counts per bin ~ p * s * N_min (binomial), for every class
    for t in (1, 2, 3):
        sel = (lab == t) & (pt < 70)
        got, _, _ = np.histogram2d(pt[sel], np.abs(ak.to_numpy(out["eta"]))[sel], bins=[[20, 40, 70], [0, 1, 2.3]])
        exp = (plan.N["A"][t] * plan.P["A"][t] * plan.p_class[t])[:-1]
        assert np.all(np.abs(got - exp) <= 4 * np.sqrt(exp) + 2), (t, got, exp)
    # the N and P histograms of every group and class are in the shard (TH2)
    f = uproot.open(str(tmp_path / "shard_0.root"))
    h = f["N_A_e"]
    assert h.classname.startswith("TH2")
    np.testing.assert_array_equal(h.values(), plan.N["A"][1])
    np.testing.assert_allclose(f["P_A_e"].values(), plan.P["A"][1])
    assert json.loads(str(f["dataset_ids"])) == {"A": dataset_id("A")}
    assert json.loads(open(tmp_path / "ids_0.json").read())["dataset_group_ids"] == {"A": group_id("A")}


def test_groups_contribute_listed_classes_ranges_and_refill(big_files, tmp_path):
    groups = [{"name": "gA", "dataset": "A", "file": r"A_\d\.root", "classes": ["tau", "jet"]},
              {"name": "gB", "dataset": "B", "file": r".*", "classes": ["e", "mu", "jet"]}]
    cfg = _cfg(big_files, tmp_path, n_jobs=2, groups=groups, pt_bins=[20, 40, 70, 1000],
               eta_bins=[0.0, 1.0, 2.3], pt_range=[25, 500], abs_eta_range=[0.0, 2.0], refill_spectrum=True)
    spectra, ms = _run_all(cfg, big_files, tmp_path, 2)
    ids = {group_id("gA"): "gA", group_id("gB"): "gB"}
    read = {}
    for j, m in enumerate(ms):
        assert m["refill_spectrum"] is True
        out = _shard(str(tmp_path / f"shard_{j}.root"), ["pt", "eta", "class_label", "dataset_group_id", "dataset_id"])
        lab = ak.to_numpy(out["class_label"])
        grp = np.array([ids[x] for x in ak.to_numpy(out["dataset_group_id"])])
        assert not np.any((grp == "gA") & np.isin(lab, [1, 2]))  # gA gives no e, mu
        assert not np.any((grp == "gB") & (lab == 0))  # gB gives no tau
        pt, aeta = ak.to_numpy(out["pt"]), np.abs(ak.to_numpy(out["eta"]))
        assert pt.min() >= 25 and pt.max() < 500 and aeta.max() < 2.0
        for path, e in m["files"].items():
            assert e["read"] == sum(e["accepted"].values()) + sum(e["rejected"].values()) + e["unlabelled"] + e["deselected"]
            assert e["out_of_range"] > 0
            read[path] = read.get(path, 0) + e["read"]
        # refill: N in the shard is this job's own slice
        f = uproot.open(str(tmp_path / f"shard_{j}.root"))
        for c, codes in (("tau", [5]), ("jet", [0])):
            direct = np.zeros((3, 2))
            for path, a, b, _ in m["segments"]["gA"]:
                t = uproot.open(cfg.resolve_stored_input(path))["candidates"].arrays(["pt", "eta", "gen_match"], entry_start=a, entry_stop=b,
                                                            library="np")
                sel = np.isin(t["gen_match"], codes)
                direct += np.histogram2d(t["pt"][sel], np.abs(t["eta"][sel]), bins=[[20, 40, 70, 1000], [0, 1, 2.3]])[0]
            np.testing.assert_array_equal(f[f"N_gA_{c}"].values(), direct)
    # nothing lost, nothing read twice
    assert read == {cfg.stored_input_path(s["path"], s["dataset"]): s["candidates"] for s in spectra}


def _runs(x):
    change = np.flatnonzero(np.diff(x) != 0)
    return np.diff(np.concatenate([[-1], change, [len(x) - 1]]))


def test_shuffled_within_groups_no_long_runs_of_one_file(big_files, tmp_path):
    files = big_files[:3]  # one group, three files
    cfg = _cfg(files, tmp_path, n_jobs=1, class_ratio={c: -1 for c in FRACTIONS}, mix_buffer=600, mix_streams=4)
    _, (m,) = _run_all(cfg, files, tmp_path, 1)
    ev = ak.to_numpy(_shard(str(tmp_path / "shard_0.root"), ["event"])["event"])
    assert len(ev) == 12000  # take all: everything, once
    file_of = (ev // EVENT_STRIDE).astype(int)
    runs = _runs(file_of)
    # a random mix of 3 equal files has mean run length 1.5 and a longest run of ~10;
    # reading the files one after the other would give runs of 4000
    assert runs.mean() < 2.0 and runs.max() < 25, (runs.mean(), runs.max())
    # every part of the shard mixes the files, to the end (no tail of one file)
    for part in np.array_split(file_of, 6):
        frac = np.bincount(part, minlength=3) / len(part)
        assert frac.max() < 0.6, frac  # (reading the files one after the other: 1.0)


def test_same_config_same_bytes_root_and_hdf5(big_files, tmp_path):
    files = big_files[3:]
    digests = {}
    for fmt in ("root", "hdf5"):
        for run in ("a", "b"):
            d = tmp_path / f"{fmt}_{run}"
            d.mkdir()
            cfg = _cfg(files, d, n_jobs=2, output_format=fmt)
            _run_all(cfg, files, d, 2)
            suffix = shard_suffix(cfg)
            digests[fmt, run] = [hashlib.sha256(open(d / f"shard_{j}{suffix}", "rb").read()).hexdigest()
                                 for j in range(2)]
            digests[fmt, run, "m"] = [open(d / f"manifest_{j}.json").read() for j in range(2)]
            # each manifest records its shard's sha256 (what the reading tasks verify)
            assert [json.loads(m)["sha256"] for m in digests[fmt, run, "m"]] == digests[fmt, run]
    for fmt in ("root", "hdf5"):
        assert digests[fmt, "a"] == digests[fmt, "b"], fmt
        assert digests[fmt, "a", "m"] == digests[fmt, "b", "m"]
        assert digests[fmt, "a"][0] != digests[fmt, "a"][1]  # a seed per job
    # the HDF5 shard has the content of the ROOT shard and reads through the same interface
    r = _shard(str(tmp_path / "root_a" / "shard_0.root"))
    h = ak.concatenate(list(open_shard(str(tmp_path / "hdf5_a" / "shard_0.h5"), "candidates").chunks(r.fields, 700)))
    for f in ("event", "pt", "class_label", "dataset_id", "pfcand_pt", "pfcand_charge"):
        assert ak.to_list(r[f]) == ak.to_list(h[f]), f


def test_bad_inputs_fail_before_any_output(big_files, tmp_path):
    files = big_files[3:]
    cfg = _cfg(files, tmp_path, n_jobs=1)
    spectra = _spectra(cfg, files)
    plan = plan_job(cfg, spectra, 0, 1)
    shard, man = tmp_path / "shard_0.root", tmp_path / "manifest_0.json"

    def run(segments):
        return run_job(cfg, 0, segments, plan.P, plan.p_class, str(shard), str(man), N=plan.N)

    # missing file
    segs = {g: [Segment(s.path.replace("B_1", "B_9"), s.start, s.stop, s.dataset) for s in v]
            for g, v in plan.segments.items()}
    with pytest.raises(InputError, match=r"B_9.root: input file does not exist"):
        run(segs)
    # truncated file
    cut = tmp_path / "B" / "B_1.root"
    cut.parent.mkdir()
    data = open(files[1][1], "rb").read()
    cut.write_bytes(data[: int(len(data) * 0.6)])
    segs = {g: [Segment(str(cut) if s.path.endswith("B_1.root") else s.path, s.start, s.stop, s.dataset) for s in v]
            for g, v in plan.segments.items()}
    with pytest.raises(InputError, match=r"B_1.root: (truncated|cannot be read|failed to read|no tree)"):
        run(segs)
    # a file with fewer entries than the spectrum said
    segs = {g: [Segment(s.path, s.start, s.stop + 10, s.dataset) for s in v] for g, v in plan.segments.items()}
    with pytest.raises(InputError, match="has 2500 entries, expected at least 2510"):
        run(segs)
    assert not shard.exists() and not man.exists()
    assert [p for p in os.listdir(tmp_path) if p.startswith(".")] == []
    # a missing branch (here: needed by a feature) names the branch and the config key
    raw = copy.deepcopy(cfg.raw)
    raw["features"]["candidate"]["iso_x"] = {"scaling": "normal"}
    cfg2 = config_from_dict(raw, str(tmp_path / "c2.yaml"))
    with pytest.raises(InputError, match=r"branch 'iso_x' \(needed by config key features.candidate.iso_x\)"):
        file_spectrum(cfg2, files[0][1], "B")
    with pytest.raises(InputError, match=r"branch 'iso_x' \(needed by config key features.candidate.iso_x\)"):
        run_job(cfg2, 0, plan.segments, plan.P, plan.p_class, str(shard), str(man))
    assert not shard.exists()


def test_interrupted_job_leaves_no_partial_shard(big_files, tmp_path, monkeypatch):
    import taggerflow.resample as rsm

    files = big_files[3:]
    cfg = _cfg(files, tmp_path, n_jobs=1, mix_buffer=500)
    plan = plan_job(cfg, _spectra(cfg, files), 0, 1)
    real, calls = rsm._accept, []

    def interrupted(*a, **k):
        calls.append(1)
        if len(calls) == 3:
            assert any(p.startswith(".shard_0.root") for p in os.listdir(tmp_path))  # writing had begun
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(rsm, "_accept", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_job(cfg, 0, plan.segments, plan.P, plan.p_class, str(tmp_path / "shard_0.root"),
                str(tmp_path / "manifest_0.json"), N=plan.N)
    assert os.listdir(tmp_path) == []  # no shard, no temporary folder, no manifest


def test_spectrum_npz_round_trip(big_files, tmp_path):
    cfg = _cfg(big_files[:1], tmp_path)
    r = file_spectrum(cfg, big_files[0][1], "A")
    write_spectrum(r, str(tmp_path / "s.npz"), str(tmp_path / "s.root"), cfg.class_names)
    s = load_spectrum(str(tmp_path / "s.npz"))
    assert int(s["candidates"]) == int(s["entries"]) == 4000 and str(s["dataset"]) == "A"
    a = open(tmp_path / "s.root", "rb").read()
    write_spectrum(r, str(tmp_path / "s.npz"), str(tmp_path / "s.root"), cfg.class_names)
    assert open(tmp_path / "s.root", "rb").read() == a  # reproducible ROOT output


def test_shard_writer_fixed_batches(tmp_path):
    """The shard writer writes baskets of exactly ``batch`` rows (the last: the rest) whatever the
    chunk sizes it is given, with the rows in order; the same input gives the same bytes."""
    from taggerflow.shards import Columns, shard_writer

    rng = np.random.default_rng(5)
    sizes = [37, 250, 1, 99, 0, 180, 433]
    counts = rng.integers(0, 5, sum(sizes))
    x = np.arange(sum(sizes), dtype=np.float32)
    vals = rng.normal(size=int(counts.sum())).astype(np.float32)
    offs = np.concatenate([[0], np.cumsum(counts)])

    def write(path):
        with shard_writer("root", str(path), "candidates", {"c": ["v"]}, 100, "test") as w:
            pos = 0
            for n in sizes:
                w.extend(Columns({"x": x[pos:pos + n].copy()},
                                 {"c": (counts[pos:pos + n].copy(), {"v": vals[offs[pos]:offs[pos + n]].copy()})}))
                pos += n

    write(tmp_path / "a.root")
    t = uproot.open(tmp_path / "a.root")["candidates"]
    np.testing.assert_array_equal(t["x"].array(library="np"), x)
    got = t["c_v"].array()
    np.testing.assert_array_equal(ak.to_numpy(ak.num(got)), counts)
    np.testing.assert_array_equal(ak.to_numpy(ak.flatten(got)), vals)
    starts = [int(s) for s in t["x"].member("fBasketEntry")[:t["x"].num_baskets + 1]]
    assert np.diff(starts).tolist() == [100] * 9 + [sum(sizes) - 900]
    (tmp_path / "b").mkdir()
    write(tmp_path / "b" / "a.root")   # the same file name: ROOT files record it
    assert (tmp_path / "a.root").read_bytes() == (tmp_path / "b" / "a.root").read_bytes()


def test_compression_level_of_the_shards(big_files, tmp_path):
    """resampling.compression_level sets the ZSTD level of ROOT shards (default 1) and the gzip level
    of HDF5 shards (default 4); the content does not depend on it."""
    import h5py
    import uproot

    files = big_files[3:4]
    levels = {}
    for fmt, level in (("root", None), ("root", 7), ("hdf5", None), ("hdf5", 2)):
        d = tmp_path / f"{fmt}_{level}"
        d.mkdir()
        extra = {} if level is None else {"compression_level": level}
        cfg = _cfg(files, d, n_jobs=1, output_format=fmt, **extra)
        _run_all(cfg, files, d, 1)
        path = str(d / f"shard_0{shard_suffix(cfg)}")
        if fmt == "root":
            with uproot.open(path) as f:
                levels[fmt, level] = (type(f.file.compression).__name__, f.file.compression.level)
        else:
            with h5py.File(path, "r") as f:
                levels[fmt, level] = ("gzip", {ds.compression_opts for ds in f["candidates"].values()})
    assert levels == {("root", None): ("ZSTD", 1), ("root", 7): ("ZSTD", 7),
                      ("hdf5", None): ("gzip", {4}), ("hdf5", 2): ("gzip", {2})}
    a = _shard(str(tmp_path / "root_None" / "shard_0.root"))
    b = _shard(str(tmp_path / "root_7" / "shard_0.root"))
    assert ak.to_list(a["event"]) == ak.to_list(b["event"]) and ak.to_list(a["pfcand_pt"]) == ak.to_list(b["pfcand_pt"])


def test_open_file_cache_keeps_the_recently_used_and_closes_the_rest(files_config, demo_files):
    """The shuffle job's cache of open inputs: a hit returns the same open source, the least recently
    used one is closed once more than ``size`` are open, close() closes every one; the default
    keeps far more files open than a job's streams read at once (re-opening costs time and memory)."""
    import inspect

    from taggerflow.resample import _Sources

    assert inspect.signature(_Sources).parameters["size"].default >= 32
    paths = sorted(demo_files.items())[:3]
    assert len(paths) == 3
    cache = _Sources(files_config, size=2)
    closed: list[str] = []
    srcs = {}
    for ds, p in paths[:2]:
        srcs[p] = cache.get(ds, p)
        real_close = srcs[p].close
        srcs[p].close = (lambda p=p, f=real_close: (closed.append(p), f()))
    assert cache.get(paths[0][0], paths[0][1]) is srcs[paths[0][1]]   # hit: now the most recent
    third = cache.get(*paths[2])
    assert closed == [paths[1][1]]                                    # the least recently used went
    assert cache.get(*paths[0]) is srcs[paths[0][1]] and third.num_entries > 0
    cache.close()
    assert closed == [paths[1][1], paths[0][1]]
