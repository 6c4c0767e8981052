"""Input formats as modules of taggerflow/formats/ registered by one line (issue #15): every
registered module keeps the contract the configuration and the readers rely on; a new format is one
module plus one registry line (a format written here, ``npz``, is accepted by the configuration with
its own section and checks and read by every stage's reader); the ``shards`` format reads both shard
formats as ShuffleMergeSpectral wrote them, checked against uproot and h5py.

The test to copy for a new format: ``test_npz_format_is_one_module_and_one_registry_line`` (its
reader against an independent read of the same file, its config section, its one-line errors).
"""

from __future__ import annotations

import copy
import sys
import textwrap

import awkward as ak
import h5py
import numpy as np
import pytest
import uproot

from conftest import tiny_raw

from taggerflow import config as config_module
from taggerflow import formats, readers, schema
from taggerflow.config import ConfigError, config_from_dict
from taggerflow.io import InputError
from taggerflow.readers import input_spec, open_source, read_prepared


@pytest.mark.parametrize("name", formats.NAMES)
def test_every_registered_format_keeps_the_contract(name):
    mod = formats.module(name)
    assert mod.FORMAT == name and isinstance(mod.DEFAULT_TREE, str) and mod.DEFAULT_TREE
    assert callable(mod.validate) and callable(mod.open_source)
    for pattern, keys in mod.SCHEMA.items():   # only its own section, in schema.legacy_schema()'s form
        assert pattern == f"inputs.{name}" or pattern.startswith(f"inputs.{name}."), pattern
        for key, (types, required, *default) in keys.items():
            # a default only for an optional key; the schema's resolved section holds it
            assert isinstance(key, str) and isinstance(required, bool) and len(default) <= 1
            assert not (required and default)
            if default:
                assert schema.default(pattern, key) == default[0]
    # one definition: the configuration and the readers know the registered formats, in its order
    assert readers.FORMATS == config_module.INPUT_FORMATS == tuple(formats.MODULES)
    assert (name in formats.section_keys()) == (f"inputs.{name}" in mod.SCHEMA)


def test_unknown_format_names_the_key_and_the_registered_formats(tmp_path):
    raw = tiny_raw()
    del raw["demo"]
    raw["inputs"]["datasets"] = {"DY": {"files": [str(tmp_path / "a.root")], "format": "parquet"}}
    with pytest.raises(ConfigError) as e:
        config_from_dict(raw, str(tmp_path / "c.yaml"))
    assert str(e.value) == (f"{tmp_path / 'c.yaml'}: inputs.datasets.DY.format: unknown format 'parquet' "
                            f"(supported: {', '.join(formats.MODULES)})")


# -- a new format: one module, one registry line ----------------------------------------------------
NPZ_MODULE = '''
"""Candidates as the arrays of an .npz file (one value per candidate), ``inputs.npz.prefix``
selecting the arrays ``<prefix><name>``, served as ``<name>``."""
import numpy as np
import awkward as ak

from taggerflow.formats.base import Source
from taggerflow.io import InputError

FORMAT = "npz"
DEFAULT_TREE = "candidates"
NEEDS_SECTION = "prefix: the arrays' common prefix"
SCHEMA = {"inputs.npz": {"prefix": (str, True)}}


def validate(section, cfg, err):
    if section.get("prefix", "x").strip() != section.get("prefix", "x"):
        raise err("inputs.npz.prefix", "no leading or trailing blanks")


def open_source(path, tree, section):
    return NpzSource(path, section["prefix"])


class NpzSource(Source):
    def __init__(self, path, prefix):
        self.path = path
        try:
            self._npz = np.load(path)
        except Exception as e:
            raise InputError(f"{path}: cannot be read as an .npz file ({type(e).__name__})") from None
        self._names = {k[len(prefix):]: k for k in self._npz.files if k.startswith(prefix)}
        self.num_entries = len(self._npz[next(iter(self._names.values()))])

    def fields(self):
        return list(self._names)

    def collections(self):
        return {}

    def read(self, start, stop, fields):
        return ak.Array({f: self._npz[self._names[f]][start:stop] for f in fields})

    def close(self):
        self._npz.close()
'''


def _npz_config(tmp_path, path: str, section) -> dict:
    raw = tiny_raw()
    del raw["demo"]
    raw["inputs"].update({"format": "npz", "datasets": {"DY": {"files": [path]}}, "selection": "pt > 30"})
    if section is not None:
        raw["inputs"]["npz"] = section
    return raw


def test_npz_format_is_one_module_and_one_registry_line(tmp_path, monkeypatch):
    (tmp_path / "npz_format.py").write_text(textwrap.dedent(NPZ_MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(formats.MODULES, "npz", "npz_format")   # the registry line
    # the schema reads the registries once per process: a format registered at run time needs a fresh read
    monkeypatch.setattr(schema, "_REGISTRY", None)
    monkeypatch.setattr(schema, "_CLASSES", {})
    sys.modules.pop("npz_format", None)
    rng = np.random.default_rng(3)
    cols = {"cand_pt": rng.uniform(20, 60, 500), "cand_eta": rng.normal(0, 1, 500),
            "cand_genmatch": rng.integers(0, 6, 500), "cand_event": np.arange(500, dtype=np.int64),
            "other": np.zeros(500)}
    path = str(tmp_path / "DY.npz")
    np.savez(path, **cols)
    cfg_path = str(tmp_path / "c.yaml")
    # its section is validated by its own schema and checks, with one-line errors naming the key
    with pytest.raises(ConfigError) as e:
        config_from_dict(_npz_config(tmp_path, path, None), cfg_path)
    assert str(e.value) == f"{cfg_path}: inputs.npz: needed by format 'npz' (prefix: the arrays' common prefix)"
    with pytest.raises(ConfigError, match=r"c.yaml: inputs.npz.suffix: unknown key \(allowed: prefix\)"):
        config_from_dict(_npz_config(tmp_path, path, {"prefix": "cand_", "suffix": "x"}), cfg_path)
    with pytest.raises(ConfigError, match=r"c.yaml: inputs.npz.prefix: no leading or trailing blanks"):
        config_from_dict(_npz_config(tmp_path, path, {"prefix": " cand_"}), cfg_path)
    cfg = config_from_dict(_npz_config(tmp_path, path, {"prefix": "cand_"}), cfg_path)
    # and every stage's reader serves it: fields, aliases/selection applied, values as in the file
    spec = input_spec(cfg, "DY")
    assert spec.format == "npz" and spec.tree == "candidates"
    with open_source(spec, path) as src:
        assert sorted(src.fields()) == ["eta", "event", "genmatch", "pt"] and src.num_entries == 500
        chunk, n = read_prepared(spec, src, 100, 400, ["pt", "event"])
    keep = cols["cand_pt"][100:400] > 30
    assert n == 300 and len(chunk) == int(keep.sum()) > 0
    np.testing.assert_array_equal(ak.to_numpy(chunk["pt"]), cols["cand_pt"][100:400][keep])
    np.testing.assert_array_equal(ak.to_numpy(chunk["event"]), np.arange(100, 400)[keep])
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip file")
    with pytest.raises(InputError) as e:
        open_source(spec, str(bad))
    assert str(e.value) == f"{bad}: cannot be read as an .npz file (ValueError) (dataset 'DY')"


# -- shards as an input format ---------------------------------------------------------------------
def test_shards_format_reads_root_and_hdf5_shards(shard_and_scaling, demo_files, tmp_path):
    from taggerflow.resample import acceptance, run_job, split_entries
    from taggerflow.spectrum import coarse_counts, file_spectrum, fine_edges

    root_shard, _, _ = shard_and_scaling
    raw = tiny_raw()
    del raw["demo"]
    raw["inputs"]["datasets"] = {ds: {"files": [p]} for ds, p in demo_files.items()}
    raw["resampling"]["output_format"] = "hdf5"
    cfg = config_from_dict(raw, str(tmp_path / "h.yaml"))
    rs = cfg.raw["resampling"]
    pt_e, eta_e = fine_edges(cfg)
    coarse, per_ds = {}, {}
    for ds, path in demo_files.items():   # as the fixture made the ROOT shard
        res = file_spectrum(cfg, path)
        counts = np.stack([res["hists"][c].values(flow=True) for c in cfg.class_names]).astype(np.int64)
        coarse[ds] = coarse_counts(counts, pt_e, eta_e, rs["pt_bins"], rs["eta_bins"])
        per_ds[ds] = [(path, res["entries"])]
    P, p = acceptance(coarse, cfg.class_names, rs["class_ratio"], False, rs["pt_bins"], rs["eta_bins"])
    h5_shard = str(tmp_path / "shard.h5")
    run_job(cfg, 0, {ds: split_entries(f, 1)[0] for ds, f in per_ds.items()}, P, p, h5_shard,
            str(tmp_path / "m.json"))

    shard_raw = copy.deepcopy(tiny_raw())
    del shard_raw["demo"]
    shard_raw["inputs"].update({"format": "shards", "selection": "class_label == 0",
                                "datasets": {"prev": {"files": [root_shard, h5_shard]}}})
    spec = input_spec(config_from_dict(shard_raw, str(tmp_path / "s.yaml")), "prev")
    truth_root = uproot.open(root_shard)["candidates"].arrays(["pt", "class_label", "pfcand_pt"], library="np")
    with h5py.File(h5_shard, "r") as f:
        g = f["candidates"]
        h5_pt, h5_label, n_pf = g["pt"][:], g["class_label"][:], g["npfcand"][:]
        h5_pfpt = np.split(g["pfcand_pt"][:], np.cumsum(n_pf)[:-1])
    for path, pt, label, pfpt in ((root_shard, truth_root["pt"], truth_root["class_label"], truth_root["pfcand_pt"]),
                                  (h5_shard, h5_pt, h5_label, h5_pfpt)):
        with open_source(spec, path) as src:
            assert src.num_entries == len(pt) > 0
            assert {"pt", "class_label", "dataset_id", "pfcand_pt"} <= set(src.fields())
            assert "pt" in src.collections()["pfcand"]
            chunk, n = read_prepared(spec, src, 0, src.num_entries, ["pt", "pfcand_pt"])
        keep = label == 0
        assert n == len(pt) and len(chunk) == int(keep.sum()) > 0, path
        np.testing.assert_array_equal(ak.to_numpy(chunk["pt"]), pt[keep])
        assert ak.to_list(chunk["pfcand_pt"]) == [list(v) for v, k in zip(pfpt, keep) if k]
    # the same candidates in both shards (same seed and inputs, only the file format differs)
    np.testing.assert_array_equal(truth_root["pt"], h5_pt)
    missing = str(tmp_path / "missing.h5")
    with pytest.raises(InputError) as e:
        open_source(spec, missing)
    assert str(e.value) == f"{missing}: input file does not exist (dataset 'prev')"
