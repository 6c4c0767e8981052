"""The typed schema (taggerflow/schema.py): defaults in one place, variants validated as full
training sections, the output hash over the resolved sections, legacy-form module sections."""

from __future__ import annotations

import copy

import pytest

from conftest import load_default_raw, write_config
from taggerflow import schema
from taggerflow.config import ConfigError, config_from_dict, load_config, resolve_training

ALL = ("name", "seed", "demo", "inputs", "classes", "spectrum", "resampling", "features", "scaling",
       "train_sample", "records", "training", "export", "evaluation")


def _load_error(raw, tmp_path) -> str:
    path = write_config(raw, tmp_path)
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert str(e.value).startswith(f"{path}: ")
    return str(e.value)


def test_writing_defaults_out_keeps_the_hash():
    raw = load_default_raw()
    raw["resampling"].pop("lastbin_disbalance", None)
    base = config_from_dict(copy.deepcopy(raw))
    explicit = copy.deepcopy(raw)
    # every default (other than None: absent) of these sections written out; whole numbers of float
    # keys as YAML integers
    written = []
    for pattern in ("resampling", "train_sample", "training", "training.model", "export", "records"):
        section = explicit
        for part in pattern.split("."):
            section = section[part]
        for key, spec in schema.sections()[pattern].items():
            if key not in section and spec.default not in (None, schema.MISSING):
                value = spec.default
                section[key] = int(value) if isinstance(value, float) and value.is_integer() else value
                written.append(f"{pattern}.{key}")
    explicit["scaling"] = {"log_step": 1}
    assert "resampling.lastbin_disbalance" in written and "training.shuffle_buffer" in written
    assert explicit["resampling"]["lastbin_disbalance"] == 1 and len(written) >= 4
    # a variant restating the base section's values is the same variant
    explicit["training"]["variants"][0]["epochs"] = explicit["training"]["epochs"]
    same = config_from_dict(explicit)
    assert same.sections_hash(ALL) == base.sections_hash(ALL)
    # a value other than the default moves the outputs, in its own section only
    explicit["resampling"]["lastbin_disbalance"] = 2.0
    moved = config_from_dict(explicit)
    assert moved.sections_hash(("resampling",)) != base.sections_hash(("resampling",))
    assert moved.sections_hash(("spectrum", "training")) == base.sections_hash(("spectrum", "training"))


def test_resolved_sections_hold_the_schema_defaults():
    raw = load_default_raw()
    raw["resampling"].pop("lastbin_disbalance", None)
    raw["resampling"].pop("mix_streams", None)
    raw.pop("scaling", None)
    cfg = config_from_dict(raw)
    assert cfg.settings("resampling").lastbin_disbalance == 1.0
    assert cfg.settings("resampling").mix_streams == 8
    assert cfg.resolved["scaling"] == {"log_step": 1}
    assert cfg.settings("train_sample.split").train == raw["train_sample"]["split"]["train"]
    # the raw configuration is left as written
    assert "lastbin_disbalance" not in cfg.raw["resampling"] and "scaling" not in cfg.raw
    # every default of the schema is the one the dataclass declares
    assert schema.default("resampling", "lastbin_disbalance") == schema.Resampling.__dataclass_fields__[
        "lastbin_disbalance"].default
    variant = resolve_training({"batch_size": 8, "epochs": 1, "learning_rate": 0.01,
                                "model": {"type": "dense", "f_layers": [4]}})
    assert variant["shuffle_buffer"] == 20000 and variant["source"] == "records"
    assert variant["model"]["activation"] == "relu"


def test_resolved_variants_are_full_sections():
    raw = load_default_raw()
    raw["training"]["variants"] = [{"name": "a"}, {"name": "b", "source": "h5", "model": {"f_layers": [3]}}]
    cfg = config_from_dict(raw)
    a, b = cfg.resolved_variants()
    assert (a["name"], a["source"], b["name"], b["source"]) == ("a", "records", "b", "h5")
    assert b["model"]["f_layers"] == [3] and b["model"]["type"] == raw["training"]["model"]["type"]
    # training_variants() stays as written (what a Training writes to its config.json)
    assert "shuffle_buffer" not in cfg.training_variants()[0] and a["shuffle_buffer"] == 20000


@pytest.mark.parametrize("override,key", [
    ({"epochz": 3}, "training.variants[1].epochz: unknown key"),
    ({"model": {"conditional": True}}, "training.variants[1].model.conditional: unknown key"),
    ({"lr_schedule": {"type": "cosine", "decay_stepz": 10}}, "training.variants[1].lr_schedule.decay_stepz: unknown key"),
    ({"epochs": "3"}, "training.variants[1].epochs: expected an integer"),
    ({"variants": []}, "training.variants[1].variants: unknown key"),
])
def test_variant_keys_are_checked_like_the_base_section(tmp_path, override, key):
    raw = load_default_raw()
    raw["training"]["variants"] = [{"name": "a"}, {"name": "b", **override}]
    assert key in _load_error(raw, tmp_path)


def test_base_section_rejects_what_a_variant_rejects(tmp_path):
    raw = load_default_raw()
    raw["training"]["model"]["conditional"] = True
    assert "training.model.conditional: unknown key" in _load_error(raw, tmp_path)


def test_legacy_module_sections_plug_in(tmp_path, monkeypatch):
    """A module's section in the legacy form {pattern: {key: (types, required[, default])}} is
    validated (unknown key, type, required), gets its defaults, and adds its key to the parent."""
    schema.sections()   # the registry as built
    saved = {p: dict(k) for p, k in schema.sections().items()}
    try:
        schema.register("inputs.toyformat", {"collection": (str, True), "n_max": (int, False, 7),
                                             "lambda": ((int, float), False)})
        raw = load_default_raw()
        raw["inputs"]["toyformat"] = {"collection": "Jet"}
        cfg = config_from_dict(raw)
        assert cfg.resolved["inputs"]["toyformat"] == {"collection": "Jet", "n_max": 7, "lambda": None}
        assert cfg.settings("inputs.toyformat").lambda_ is None
        raw["inputs"]["toyformat"] = {"collection": "Jet", "n_maxx": 1}
        assert "inputs.toyformat.n_maxx: unknown key (allowed: collection, lambda, n_max)" in _load_error(raw, tmp_path)
        raw["inputs"]["toyformat"] = {"n_max": 1}
        assert "inputs.toyformat.collection: missing required key" in _load_error(raw, tmp_path)
        raw["inputs"]["toyformat"] = {"collection": "Jet", "n_max": True}
        assert "inputs.toyformat.n_max: expected an integer" in _load_error(raw, tmp_path)
    finally:
        schema.sections().clear()
        schema.sections().update(saved)


def test_registered_format_sections_are_typed():
    # the formats of taggerflow/formats/ (legacy form) are sections of the schema, with their keys
    regs = schema.sections()
    from taggerflow import formats

    with_section = [name for name in formats.NAMES if f"inputs.{name}" in formats.module(name).SCHEMA]
    assert {"nanoaod", "h5", "physlite", "delphes"} <= set(with_section)
    for name in formats.NAMES:
        if name not in with_section:   # candidate_tree, shards: no section of their own
            assert f"inputs.{name}" not in regs and name not in regs["inputs"]
            continue
        assert f"inputs.{name}" in regs and name in regs["inputs"]
        assert set(regs[f"inputs.{name}"]) == set(formats.module(name).SCHEMA[f"inputs.{name}"])
