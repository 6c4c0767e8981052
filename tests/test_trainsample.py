"""WriteTrainSample core: splits, ordering/padding, layout, attributes and scaling applied."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import uproot

from taggerflow.trainsample import order_and_pad, split_index, write_train_sample


def test_split_index_deterministic_and_fractions():
    rng = np.random.default_rng(1)
    events = rng.integers(0, 2**63, 200_000, dtype=np.uint64)
    ds = np.full(len(events), 12345, dtype=np.int64)
    fr = {"train": 0.7, "validation": 0.2, "test": 0.1}
    s = split_index(events, ds, fr)
    np.testing.assert_array_equal(s, split_index(events.copy(), ds, fr))
    np.testing.assert_allclose(np.bincount(s) / len(s), [0.7, 0.2, 0.1], atol=0.005)
    # the dataset id changes the assignment (events of different datasets are unrelated)
    assert np.mean(s != split_index(events, ds + 1, fr)) > 0.3
    # consecutive event numbers are not correlated with the split
    seq = split_index(np.arange(100_000, dtype=np.uint64), np.zeros(100_000, dtype=np.int64), fr)
    np.testing.assert_allclose(np.bincount(seq) / len(seq), [0.7, 0.2, 0.1], atol=0.01)


def test_order_and_pad():
    counts = np.array([3, 0, 5, 1])
    key = np.array([1.0, 3.0, 2.0, 5.0, 4.0, 3.0, 2.0, 1.0, 9.0])
    flat = np.stack([key, key * 10], axis=1)
    padded, valid = order_and_pad(flat, counts, key, n_max=4)
    assert padded.shape == (4, 4, 2)
    np.testing.assert_array_equal(valid.sum(axis=1), [3, 0, 4, 1])
    np.testing.assert_array_equal(padded[0, :, 0], [3, 2, 1, 0])
    np.testing.assert_array_equal(padded[2, :, 0], [5, 4, 3, 2])  # truncated: the smallest (1) dropped
    np.testing.assert_array_equal(padded[2, :, 1], [50, 40, 30, 20])
    np.testing.assert_array_equal(padded[1], 0)
    np.testing.assert_array_equal(padded[3, :, 0], [9, 0, 0, 0])


def test_write_train_sample_layout_and_scaling(files_config, shard_and_scaling):
    cfg = files_config
    shard, scaling, d = shard_and_scaling
    outputs = {s: str(d / f"{s}.h5") for s in ("train", "validation", "test")}
    counts = write_train_sample(cfg, [shard], scaling, outputs)
    n_shard = uproot.open(shard)["candidates"].num_entries
    assert sum(counts.values()) == n_shard
    assert counts["train"] > counts["validation"] > 0 and counts["test"] > 0
    coll = cfg.collections[0]
    cand_names = [v.name for v in cfg.candidate_variables]
    with h5py.File(outputs["train"], "r") as f:
        n = counts["train"]
        assert f["jets/inputs"].shape == (n, len(cand_names))
        assert list(f["jets/inputs"].attrs["variables"]) == cand_names
        assert list(f["jets/labels"].attrs["classes"]) == cfg.class_names
        assert f["jets/labels_one_hot"].shape == (n, 4)
        np.testing.assert_array_equal(f["jets/labels_one_hot"][:].argmax(1), f["jets/labels"][:])
        assert f["pfcand/inputs"].shape == (n, coll.n_max, len(coll.variables))
        assert list(f["pfcand/inputs"].attrs["variables"]) == coll.variable_names
        assert f["pfcand/valid"].dtype == bool
        assert json.loads(f.attrs["scaling"]) == json.loads(json.dumps(scaling))
        x = f["jets/inputs"][:]
        # raw kinematics beside the scaled inputs: pt undoes the scaling of the 'pt' input
        pt_col = cand_names.index("pt")
        p = scaling["candidate"]["pt"]["global"]
        unclamped = np.abs(x[:, pt_col]) < 4.9
        np.testing.assert_allclose(f["jets/pt"][:][unclamped], x[unclamped, pt_col] * p["std"] + p["mean"], rtol=1e-4)
        assert f["jets/pt"][:].min() >= 20 and f["jets/event"].dtype == np.uint64
        tracks, valid = f["pfcand/inputs"][:], f["pfcand/valid"][:]
    # normal-scaled candidate variables: mean ~0, std ~1 on the (train part of the) sample
    for i, v in enumerate(cfg.candidate_variables):
        if v.scaling == "normal":
            assert abs(x[:, i].mean()) < 0.15, v.name
            assert 0.8 < x[:, i].std() < 1.2, v.name
        if v.scaling == "linear":
            assert x[:, i].min() >= -1 and x[:, i].max() <= 1
    # padded slots are zero; real constituents sorted by pt (pt_frac, scaled linearly, is monotonic)
    assert np.all(tracks[~valid] == 0)
    ptf = tracks[..., coll.variable_names.index("pt_frac")]
    for row, ok in zip(ptf[:200], valid[:200]):
        r = row[ok]
        assert np.all(np.diff(r) <= 1e-6)
    assert valid.sum(1).max() == coll.n_max  # some candidates were truncated


def test_splits_disjoint_by_event(files_config, shard_and_scaling):
    cfg = files_config
    shard, scaling, d = shard_and_scaling
    t = uproot.open(shard)["candidates"]
    ev = t["event"].array(library="np")
    ds = t["dataset_id"].array(library="np")
    s = split_index(ev, ds, cfg.raw["train_sample"]["split"])
    keys = {}
    for e, dd, si in zip(ev, ds, s):
        keys.setdefault((int(e), int(dd)), set()).add(int(si))
    assert all(len(v) == 1 for v in keys.values())
    assert any(list(ev).count(e) > 1 for e in ev[:300])  # events with several candidates exist

    # the written files: every candidate once, and no (event, dataset) in two splits, also when the
    # shard's candidates are written by two branches (two halves of the shard in separate files)
    half = len(ev) // 2
    a_path, b_path = str(d / "half_a.root"), str(d / "half_b.root")
    arr = t.arrays()
    from taggerflow.shards import shard_writer

    colls = {"pfcand": [k[len("pfcand_"):] for k in arr.fields if k.startswith("pfcand_")]}
    for path, part in ((a_path, arr[:half]), (b_path, arr[half:])):
        with shard_writer("root", path, "candidates", colls, 10_000, "test") as w:
            w.extend(part)
    seen: dict[str, set] = {}
    total = 0
    for i, path in enumerate((a_path, b_path)):
        outputs = {sp: str(d / f"branch{i}_{sp}.h5") for sp in ("train", "validation", "test")}
        write_train_sample(cfg, [path], scaling, outputs)
        for sp, out in outputs.items():
            with h5py.File(out, "r") as f:
                pairs = set(zip(f["jets/event"][:].tolist(), f["jets/dataset_id"][:].tolist()))
                total += len(f["jets/event"])
            seen.setdefault(sp, set()).update(pairs)
    assert total == len(ev)
    assert not (seen["train"] & seen["validation"]) and not (seen["train"] & seen["test"]) \
        and not (seen["validation"] & seen["test"])
    assert all(len(v) > 0 for v in seen.values())
    # events split across the two halves (the same event written by both branches) exist
    first = set(zip(ev[:half].tolist(), ds[:half].tolist()))
    assert first & set(zip(ev[half:].tolist(), ds[half:].tolist()))


def test_missing_scaling_variable_is_an_error(files_config, shard_and_scaling, tmp_path):
    shard, scaling, _ = shard_and_scaling
    broken = json.loads(json.dumps(scaling))
    del broken["pfcand"]["dz"]
    outputs = {s: str(tmp_path / f"{s}.h5") for s in ("train", "validation", "test")}
    with pytest.raises(Exception, match=r"pfcand.dz"):
        write_train_sample(files_config, [shard], broken, outputs)
    assert not any((tmp_path / f"{s}.h5").exists() for s in outputs)  # nothing half-written
    assert not list(tmp_path.iterdir())


# ---------------------------------------------------------------------------------------------
# train_sample options, bad input, interrupts
from taggerflow.config import ConfigError, config_from_dict  # noqa: E402
from taggerflow.io import InputError  # noqa: E402
from taggerflow.scaling import ScalingError  # noqa: E402
from taggerflow.trainsample import (TrainSampleError, class_weight_table, train_sample_hash,  # noqa: E402
                                    weight_histogram)

SPLIT_NAMES = ("train", "validation", "test")


def _cfg(base, **train_sample):
    raw = json.loads(json.dumps(base.raw))
    raw["train_sample"].update(train_sample)
    return config_from_dict(raw, base.path)


def _outputs(d, tag=""):
    return {s: str(d / f"{tag}{s}.h5") for s in SPLIT_NAMES}


def _all(outputs, key):
    parts = []
    for s in SPLIT_NAMES:
        with h5py.File(outputs[s], "r") as f:
            parts.append(f[key][:])
    return np.concatenate(parts)


@pytest.fixture(scope="module")
def full_options(files_config, shard_and_scaling, tmp_path_factory):
    """Every option on: float16, lzf, small chunks, concatenated candidate variables, additional and
    constituent labels, weights."""
    shard, scaling, _ = shard_and_scaling
    cfg = _cfg(files_config, precision="float16", compression="lzf", chunk_rows=256,
               concat_jet_tracks=["pt", "abs_eta"], additional_labels={"pt": "pt", "sqrt_eta": "sqrt(eta)"},
               constituent_labels={"pfcand": ["ptype", "charge"]}, weights=True)
    outputs = _outputs(tmp_path_factory.mktemp("full"))
    with np.errstate(invalid="ignore"):
        counts = write_train_sample(cfg, [shard], scaling, outputs)
    return cfg, outputs, counts


def test_options_layout(full_options, shard_and_scaling):
    cfg, outputs, counts = full_options
    shard = shard_and_scaling[0]
    coll = cfg.collections[0]
    with h5py.File(outputs["train"], "r") as f:  # plain h5py reads lzf
        n = counts["train"]
        x = f["jets/inputs"][:]
        assert x.dtype == np.float16 and f["jets/inputs"].compression == "lzf"
        assert f["jets/inputs"].chunks == (256, len(cfg.candidate_variables))
        assert f["pfcand/inputs"].chunks == (256, 16, 11)
        trk, valid = f["pfcand/inputs"][:], f["pfcand/valid"][:]
        assert trk.shape == (n, 16, 11) and trk.dtype == np.float16
        assert list(f["pfcand/inputs"].attrs["variables"]) == coll.variable_names + ["pt", "abs_eta"]
        names = list(f["jets/inputs"].attrs["variables"])
        for j, v in enumerate(["pt", "abs_eta"]):
            col = trk[..., 9 + j]
            np.testing.assert_array_equal(col[valid], np.broadcast_to(x[:, names.index(v)][:, None], valid.shape)[valid])
            assert np.all(col[~valid] == 0)
        lab = f["pfcand/labels"][:]
        assert lab.shape == (n, 16, 2) and lab.dtype == np.int32
        assert list(f["pfcand/labels"].attrs["variables"]) == ["ptype", "charge"]
        assert np.all(lab[~valid] == -1)
        # ptype is also an unscaled input: the labels are ordered like the inputs
        np.testing.assert_array_equal(lab[..., 0][valid], trk[..., coll.variable_names.index("ptype")][valid])
        assert set(np.unique(lab[..., 1][valid])) <= {-1, 0, 1}
        add = f["jets/additional_labels"][:]
        assert add.shape == (n, 2) and list(f["jets/additional_labels"].attrs["variables"]) == ["pt", "sqrt_eta"]
        eta = f["jets/eta"][:]
        np.testing.assert_array_equal(add[:, 0], f["jets/pt"][:])
        np.testing.assert_allclose(add[eta >= 0, 1], np.sqrt(eta[eta >= 0]), rtol=1e-6)
        assert np.all(add[eta < 0, 1] == 0) and (eta < 0).any()  # NaN -> 0
        assert f.attrs["config_hash"] == train_sample_hash(cfg)
        assert json.loads(f.attrs["train_sample"])["weights"] is True
    # the writer does not depend on the training section
    raw = json.loads(json.dumps(cfg.raw))
    raw["training"]["batch_size"] = 7
    assert train_sample_hash(config_from_dict(raw, cfg.path)) == train_sample_hash(cfg)
    assert sum(counts.values()) == uproot.open(shard)["candidates"].num_entries


def test_weights_flatten_each_class(full_options):
    cfg, outputs, _ = full_options
    w, y = _all(outputs, "jets/weights"), _all(outputs, "jets/labels")
    pt, eta = _all(outputs, "jets/pt"), np.abs(_all(outputs, "jets/eta"))
    rs = cfg.raw["resampling"]
    for t in range(len(cfg.class_names)):
        sel = y == t
        assert w[sel].mean() == pytest.approx(1.0, rel=1e-5)
        h, _, _ = np.histogram2d(pt[sel], eta[sel], bins=[rs["pt_bins"], rs["eta_bins"]], weights=w[sel])
        full = h[h > 0]
        np.testing.assert_allclose(full, full.mean(), rtol=1e-4)  # every populated bin weighs the same
    assert not np.allclose(w, 1.0)


def test_class_weight_table():
    counts = np.array([[[1, 3], [0, 4]], [[5, 5], [5, 5]]])
    table = class_weight_table(counts)
    # class 0: 8 candidates in 3 populated bins -> 8 / (3 N)
    np.testing.assert_allclose(table[0], [[8 / 3, 8 / 9], [0, 8 / 12]])
    np.testing.assert_allclose(table[1], 1.0)
    assert (counts * table).sum(axis=(1, 2)) == pytest.approx(counts.sum(axis=(1, 2)))


def test_weight_histogram_counts_the_shard(files_config, shard_and_scaling):
    shard = shard_and_scaling[0]
    h = weight_histogram(files_config, [shard])
    t = uproot.open(shard)["candidates"]
    assert h.sum() == t.num_entries
    np.testing.assert_array_equal(h.sum(axis=(1, 2)), np.bincount(t["class_label"].array(library="np"), minlength=4))


@pytest.mark.parametrize("compression", [None, "gzip", "lzf"])
def test_compressions_readable(files_config, shard_and_scaling, tmp_path, compression):
    shard, scaling, _ = shard_and_scaling
    cfg = _cfg(files_config, compression=compression, chunk_rows=512)
    outputs = _outputs(tmp_path)
    counts = write_train_sample(cfg, [shard], scaling, outputs)
    with h5py.File(outputs["validation"], "r") as f:
        assert f["pfcand/inputs"].compression == compression
        assert f["pfcand/inputs"].shape[0] == counts["validation"] == f.attrs["n_candidates"]
        assert f["pfcand/inputs"][:].any()
        assert np.all(f["jets/weights"][:] == 1)  # weights off: ones
        assert "jets/additional_labels" not in f and "pfcand/labels" not in f


def test_interrupt_leaves_nothing(files_config, shard_and_scaling, tmp_path, monkeypatch):
    import taggerflow.trainsample as ts

    shard, scaling, _ = shard_and_scaling
    real, real_flush = ts.prepare, ts.H5Writer._flush
    calls, flushed = [], []

    def interrupted(*a, **k):
        calls.append(1)
        if len(calls) == 3:  # after some chunks were written to the temporary files
            tmp = list(tmp_path.iterdir())
            assert len(tmp) == 3 and all(p.name.startswith(".") for p in tmp)
            assert sum(flushed) > 1000
            raise KeyboardInterrupt
        return real(*a, **k)

    def flush(self):
        flushed.append(self._fill)
        real_flush(self)

    monkeypatch.setattr(ts, "prepare", interrupted)
    monkeypatch.setattr(ts.H5Writer, "_flush", flush)
    monkeypatch.setattr(ts.H5Writer, "FLUSH_BYTES", 1)  # write every whole chunk at once
    cfg = _cfg(files_config, chunk_rows=64)
    with pytest.raises(KeyboardInterrupt):
        ts.write_train_sample(cfg, [shard], scaling, _outputs(tmp_path))
    assert len(calls) == 3
    assert not list(tmp_path.iterdir())  # no output, no temporary file


def test_refuses_to_overwrite_another_config(files_config, shard_and_scaling, tmp_path):
    shard, scaling, _ = shard_and_scaling
    outputs = _outputs(tmp_path)
    write_train_sample(files_config, [shard], scaling, outputs)
    before = {s: open(p, "rb").read() for s, p in outputs.items()}
    write_train_sample(files_config, [shard], scaling, outputs)  # same configuration: rewritten, same content
    assert {s: open(p, "rb").read() for s, p in outputs.items()} == before
    with h5py.File(outputs["train"], "r") as f:
        assert f.attrs["config_hash"] == train_sample_hash(files_config)
    other = _cfg(files_config, precision="float16")
    with pytest.raises(TrainSampleError, match="another configuration"):
        write_train_sample(other, [shard], scaling, outputs)
    assert {s: open(p, "rb").read() for s, p in outputs.items()} == before
    with pytest.raises(TrainSampleError, match="another configuration"):
        write_train_sample(files_config, [shard], scaling, outputs, config_hash="abc")
    (tmp_path / "x").mkdir()
    junk = {s: str(tmp_path / "x" / f"{s}.h5") for s in SPLIT_NAMES}
    open(junk["test"], "w").write("not hdf5")
    with pytest.raises(TrainSampleError, match="not a training file"):
        write_train_sample(files_config, [shard], scaling, junk)
    assert sorted(p.name for p in (tmp_path / "x").iterdir()) == ["test.h5"]


def test_scaling_from_another_config_is_an_error(files_config, shard_and_scaling, tmp_path):
    shard, scaling, _ = shard_and_scaling
    outputs = _outputs(tmp_path)
    extra = json.loads(json.dumps(scaling))
    extra["candidate"]["n_tracks"] = extra["candidate"]["pt"]
    with pytest.raises(ScalingError, match=r"candidate.n_tracks.*another configuration"):
        write_train_sample(files_config, [shard], extra, outputs)
    retyped = json.loads(json.dumps(scaling))
    retyped["candidate"]["mass"]["global"]["scaling"] = "linear"
    with pytest.raises(ScalingError, match=r"candidate.mass.global was computed as 'linear'"):
        write_train_sample(files_config, [shard], retyped, outputs)
    assert not list(tmp_path.iterdir())


def test_shard_without_a_needed_branch(files_config, shard_and_scaling, tmp_path):
    shard, scaling, _ = shard_and_scaling
    cfg = _cfg(files_config, additional_labels=["nope"], constituent_labels={"pfcand": ["ptype"]})
    with pytest.raises(InputError, match=r"branch 'nope' \(needed by config key train_sample.additional_labels.nope\)"):
        write_train_sample(cfg, [shard], scaling, _outputs(tmp_path))
    cfg = _cfg(files_config, constituent_labels={"pfcand": ["truth"]})
    with pytest.raises(InputError, match=r"pfcand_truth.*train_sample.constituent_labels.pfcand"):
        write_train_sample(cfg, [shard], scaling, _outputs(tmp_path))
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("section, update, key, words", [
    ("train_sample", {"concat_jet_tracks": ["pt", "nope"]}, "train_sample.concat_jet_tracks", "not a candidate variable"),
    ("train_sample", {"constituent_labels": {"tracks": ["x"]}}, "train_sample.constituent_labels.tracks", "not a collection"),
    ("train_sample", {"constituent_labels": {"pfcand": []}}, "train_sample.constituent_labels.pfcand", "non-empty list"),
    ("train_sample", {"additional_labels": ["os.system('x')"]}, "train_sample.additional_labels.os.system('x')", "invalid expression"),
    ("train_sample", {"chunk_rows": 0}, "train_sample.chunk_rows", "must be >= 1"),
    ("train_sample", {"weights": "yes"}, "train_sample.weights", "expected true/false"),
    ("train_sample", {"compression": "lz4"}, "train_sample.compression", "expected null, gzip or lzf"),
    ("records", {"add_vars": ["pt", "eta"]}, "records.add_vars", "'eta' is not a candidate variable"),
])
def test_config_errors(files_config, section, update, key, words):
    raw = json.loads(json.dumps(files_config.raw))
    raw[section].update(update)
    with pytest.raises(ConfigError) as e:
        config_from_dict(raw, "x.yaml")
    assert f"x.yaml: {key}: " in str(e.value) and words in str(e.value)


def test_prepare_for_model_inputs_without_label_branches(files_config, shard_and_scaling):
    """export.check_inputs reads only the model's branches: prepare() then leaves the labels out and
    the sequences carry the concatenated candidate variables as in the files."""
    from taggerflow.export import check_inputs

    shard, scaling, _ = shard_and_scaling
    cfg = _cfg(files_config, concat_jet_tracks=True, additional_labels=["run"],
               constituent_labels={"pfcand": ["ptype"]})
    inputs = check_inputs(cfg, [shard], scaling, 100)
    assert inputs["keras"]["pfcand"].shape == (100, 16, 9 + len(cfg.candidate_variables))
    assert "additional_labels" not in inputs["keras"]  # 'run' was not read
    assert inputs["keras"]["pfcand_labels"].shape == (100, 16, 1)  # ptype is also an input: read


def test_sort_by_absolute_value(files_config, shard_and_scaling, tmp_path):
    """sort_by: abs(d0_sig) orders each candidate's constituents by |d0_sig|, descending."""
    from taggerflow.config import load_config
    from tests.conftest import write_config

    shard, scaling, _ = shard_and_scaling
    raw = json.loads(json.dumps(files_config.raw))
    raw["features"]["collections"]["pfcand"]["sort_by"] = "abs(d0_sig)"
    cfg = load_config(write_config(raw, tmp_path))
    coll = cfg.collections[0]
    assert (coll.sort_field, coll.sort_abs) == ("d0_sig", True)
    assert cfg.required_branches()["pfcand_d0_sig"]
    outputs = {s: str(tmp_path / f"{s}.h5") for s in ("train", "validation", "test")}
    write_train_sample(cfg, [shard], scaling, outputs)
    p = scaling["pfcand"]["d0_sig"]["global"]
    col = coll.variable_names.index("d0_sig")
    with h5py.File(outputs["train"], "r") as f:
        x, valid = f["pfcand/inputs"][:, :, col], f["pfcand/valid"][:]
    raw_d0 = x * p["std"] + p["mean"]  # undo the scaling (clamped values keep the order)
    signed_order_seen = False
    for row, ok in zip(raw_d0[:300], valid[:300]):
        r = np.abs(row[ok])
        assert np.all(np.diff(r) <= 1e-3 * (1 + r[:-1])), row[ok]
        signed_order_seen |= bool(np.any(np.diff(row[ok]) > 1e-3))
    assert signed_order_seen  # negative d0_sig values really were ordered by magnitude


@pytest.mark.parametrize("sort_by", ["abs(d0_sig", "d0_sig * 2", "abs()"])
def test_sort_by_bad_expression(files_config, tmp_path, sort_by):
    from taggerflow.config import load_config
    from tests.conftest import write_config

    raw = json.loads(json.dumps(files_config.raw))
    raw["features"]["collections"]["pfcand"]["sort_by"] = sort_by
    with pytest.raises(ConfigError, match=r"features\.collections\.pfcand\.sort_by"):
        load_config(write_config(raw, tmp_path))


def test_non_finite_inputs_follow_the_recipe(files_config, shard_and_scaling, tmp_path):
    """NaN, +inf and -inf in candidate and constituent variables: the training files hold the input
    recipe's values (clamp, then non-finite -> default: +-inf at a bound where the variable has one,
    the default otherwise and for NaN), and every other value is what the clean shard gives."""
    from nonfinite import write_nonfinite_shard

    cfg = files_config
    shard, scaling, _ = shard_and_scaling
    bad_shard = str(tmp_path / "nonfinite.root")
    injected = write_nonfinite_shard(cfg, shard, bad_shard)
    clean = {s: str(tmp_path / f"clean_{s}.h5") for s in ("train", "validation", "test")}
    dirty = {s: str(tmp_path / f"dirty_{s}.h5") for s in ("train", "validation", "test")}
    write_train_sample(cfg, [shard], scaling, clean)
    write_train_sample(cfg, [bad_shard], scaling, dirty)
    cand_names = [v.name for v in cfg.candidate_variables]
    cons_names = cfg.collections[0].variable_names
    with h5py.File(clean["test"], "r") as f:
        clean_jets, clean_cons = f["jets/inputs"][:], f["pfcand/inputs"][:]
    with h5py.File(dirty["test"], "r") as f:
        jets, cons, valid = f["jets/inputs"][:], f["pfcand/inputs"][:], f["pfcand/valid"][:]
        keys = list(zip(f["jets/event"][:].tolist(), f["jets/dataset_id"][:].tolist()))
    assert np.isfinite(jets).all() and np.isfinite(cons).all()

    def expected(entry, value):  # the recipe, written out for one scaled value
        if np.isnan(value):
            return entry["default"]
        bound = entry["lim_max"] if value > 0 else entry["lim_min"]
        return entry["default"] if bound is None else bound

    seen_bound = seen_default = 0
    expect_jets, expect_cons = clean_jets.copy(), clean_cons.copy()
    for inj in injected:
        row = keys.index((inj["event"], inj["dataset_id"]))
        i, j = cand_names.index(inj["candidate"]), cons_names.index(inj["constituent"])
        e_cand = scaling["candidate"][inj["candidate"]]["global"]
        e_cons = scaling["pfcand"][inj["constituent"]]["global"]
        expect_jets[row, i] = expected(e_cand, inj["value"])
        expect_cons[row, 0, j] = expected(e_cons, inj["value"])  # the highest-pt constituent: slot 0
        assert valid[row, 0]
        assert jets[row, i] == np.float32(expect_jets[row, i]), inj
        assert cons[row, 0, j] == np.float32(expect_cons[row, 0, j]), inj
        seen_bound += np.isinf(inj["value"]) and e_cand["lim_max"] is not None
        seen_default += np.isnan(inj["value"]) or e_cand["lim_max"] is None
    assert seen_bound >= 3 and seen_default >= 3  # both branches of the recipe were exercised
    # +inf of a bounded variable sits at its upper bound, e.g. mass at +5 sigma
    assert expect_jets[keys.index((injected[1]["event"], injected[1]["dataset_id"])), cand_names.index("mass")] == 5.0
    # nothing else changed
    np.testing.assert_array_equal(jets, expect_jets)
    np.testing.assert_array_equal(cons, expect_cons)
