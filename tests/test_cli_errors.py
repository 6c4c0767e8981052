"""A configuration error on the command line (`law run`, as a user and as a batch job run it): one line
naming the file and the key, a non-zero exit status, no luigi traceback."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from conftest import REPO, tiny_raw, write_config


def _law_run(args: list[str], tmp, **env_extra) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("LAW_JOB_HOME", None)
    env.update({"PYTHONPATH": REPO, "LAW_CONFIG_FILE": os.path.join(REPO, "law.cfg"),
                "LAW_HOME": str(tmp / "law_home"), "TAGGERFLOW_DATA": str(tmp / "data"),
                "TF_CPP_MIN_LOG_LEVEL": "2", **env_extra})
    law_bin = shutil.which("law", path=os.path.dirname(sys.executable)) or shutil.which("law")
    return subprocess.run([law_bin, "run", *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=300)


def _bad_value(raw):
    raw["resampling"]["n_jobs"] = 0
    return "resampling.n_jobs: must be >= 1"


def _unknown_key(raw):
    raw["training"]["epochz"] = 3
    return "training.epochz: unknown key (allowed: "


def _empty_glob(raw):
    del raw["demo"]
    raw["inputs"]["datasets"] = {"DY": {"files": ["DY/*.root"]}, "TT": {"files": ["TT/*.root"]}}
    return "inputs.datasets.DY.files: no file matches '"


@pytest.mark.parametrize("task", ["tasks.spectrum.Spectrum", "tasks.training.Training"])
@pytest.mark.parametrize("make_error", [_bad_value, _unknown_key, _empty_glob])
def test_config_error_is_one_line_and_fails(tmp_path, task, make_error):
    raw = tiny_raw()
    expected = make_error(raw)
    config = write_config(raw, tmp_path)
    proc = _law_run([task, "--version", "bad", "--config", config], tmp_path)
    assert proc.returncode != 0
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"{config}: {expected}")
    assert "Traceback" not in proc.stderr and "luigi" not in proc.stderr
    assert not (tmp_path / "data").exists() or not any((tmp_path / "data").iterdir())   # nothing written


def test_missing_config_file(tmp_path):
    missing = str(tmp_path / "nope.yaml")
    proc = _law_run(["tasks.spectrum.Spectrum", "--version", "bad", "--config", missing], tmp_path)
    assert proc.returncode != 0
    assert proc.stdout == "" and proc.stderr == f"{missing}: configuration file not found\n"


def test_config_error_in_a_batch_job(tmp_path):
    """A job runs its branch as `law run <Task> --branch N --workflow local` with LAW_JOB_HOME set:
    its log gets the same line and the job fails."""
    raw = tiny_raw()
    expected = _bad_value(raw)
    config = write_config(raw, tmp_path)
    proc = _law_run(["tasks.spectrum.Spectrum", "--version", "bad", "--config", config, "--branch", "0",
                     "--workflow", "local"], tmp_path, LAW_JOB_HOME=str(tmp_path))
    assert proc.returncode != 0
    assert proc.stdout == "" and proc.stderr == f"{config}: {expected}\n"
