"""Corruption is caught where it enters: a truncated input fails in Spectrum, a changed shard fails
every task that reads it, absurd moments fail MergeScaling, and a failed strict validation stays
incomplete. Real files cut with `truncate`, real bytes overwritten in a basket, real `law run`
subprocesses; each error is one line naming the file and the branch or variable, and nothing
half-written stays."""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys

import h5py
import numpy as np
import pytest
import uproot

from conftest import REPO, tiny_raw, write_config

from taggerflow.config import config_from_dict
from taggerflow.integrity import ABSURD_MOMENT, check_baskets, needed_branches, verify_shard
from taggerflow.io import InputError
from taggerflow.readers import input_spec, open_source
from taggerflow.resample import plan_job, run_job
from taggerflow.scaling import ScalingError, feature_scaling_job, write_scaling_outputs
from taggerflow.spectrum import file_spectrum, fine_edges
from taggerflow.utils import read_json, write_json


# ---------------------------------------------------------------------------------------------
# helpers
def _cut_in_half(src: str, dst: str) -> int:
    shutil.copyfile(src, dst)
    size = os.path.getsize(dst) // 2
    subprocess.run(["truncate", "-s", str(size), dst], check=True)
    assert os.path.getsize(dst) == size
    return size


def _unreadable_branches(path: str, tree: str = "candidates") -> set[str]:
    """The branches uproot cannot read (the ground truth the check must agree with)."""
    t = uproot.open(path)[tree]
    bad = set()
    for name in t.keys():
        try:
            t[name].array(library="np")
        except Exception:
            bad.add(name)
    return bad


def _zero_basket_bytes(path: str, branch: str, n: int = 64, tree: str = "candidates") -> int:
    """Write ``n`` zero bytes into the middle of the first basket of ``branch`` (found with uproot)."""
    with uproot.open(path) as f:
        b = f[tree][branch]
        seek, size = int(b.member("fBasketSeek")[0]), int(b.member("fBasketBytes")[0])
    assert size > 2 * n
    with open(path, "r+b") as f:
        f.seek(seek + size // 2)
        f.write(b"\0" * n)
    return seek + size // 2


def _one_line(msg: str) -> str:
    assert "\n" not in msg, msg
    return msg


def _files_under(root) -> list[str]:
    return sorted(os.path.relpath(p, root) for p in glob.glob(os.path.join(str(root), "**", "*"), recursive=True)
                  + glob.glob(os.path.join(str(root), "**", ".*"), recursive=True) if os.path.isfile(p))


def _law_env(tmp_path, data) -> dict:
    env = dict(os.environ)
    env.update({"PYTHONPATH": REPO, "LAW_CONFIG_FILE": os.path.join(REPO, "law.cfg"),
                "LAW_HOME": str(tmp_path / "law_home"), "TAGGERFLOW_DATA": str(data),
                "TF_CPP_MIN_LOG_LEVEL": "2"})
    return env


def _law(args: list[str], env: dict) -> subprocess.CompletedProcess:
    law_bin = shutil.which("law", path=os.path.dirname(sys.executable)) or shutil.which("law")
    proc = subprocess.run([law_bin, *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    proc.log = proc.stdout + proc.stderr
    return proc


def _error_line(log: str, start: str) -> str:
    """The line of a law/luigi log that starts with ``start`` (the exception's message)."""
    lines = [ln for ln in log.splitlines() if start in ln and not ln.lstrip().startswith("raise ")]
    assert lines, log[-4000:]
    return lines[-1]


# ---------------------------------------------------------------------------------------------
# truncated inputs
def test_truncated_input_fails_in_spectrum_naming_file_and_branch(files_config, demo_files, tmp_path):
    intact = demo_files["WJets"]
    half = str(tmp_path / "WJets_half.root")
    size = _cut_in_half(intact, half)
    unreadable = _unreadable_branches(half)
    assert unreadable and not _unreadable_branches(intact)   # the cut file is really broken
    assert file_spectrum(files_config, intact)["entries"] == 1500
    with pytest.raises(InputError) as err:
        file_spectrum(files_config, half, "WJets")
    msg = _one_line(str(err.value))
    assert msg.startswith(f"{half}: truncated or corrupt file: branch '")
    assert f"beyond the end of the file ({size} bytes)" in msg
    assert re.search(r"branch '([^']+)'", msg).group(1) in unreadable
    # every unreadable branch is one the check finds, one at a time
    t = uproot.open(half)["candidates"]
    for name in sorted(unreadable):
        with pytest.raises(InputError, match=f"branch '{name}'"):
            check_baskets(t, half, [name])
    # the shuffle's own re-check of its inputs (TreeSource.check_integrity) is the same check
    from taggerflow.readers import input_spec, open_source

    src = open_source(input_spec(files_config, "WJets"), half)
    try:
        with pytest.raises(InputError, match=rf"^{re.escape(half)}: truncated or corrupt file: branch '"):
            src.check_integrity()
    finally:
        src.close()
    intact_src = open_source(input_spec(files_config, "WJets"), intact)
    intact_src.check_integrity()
    intact_src.close()
    check_baskets(t, half, sorted(set(t.keys()) - unreadable))   # the readable ones pass


def test_needed_branches_leave_out_only_disabled_ones(demo_files):
    raw = tiny_raw()
    del raw["demo"]
    raw["inputs"]["datasets"] = {"TT": {"files": [demo_files["TT"]]}}
    raw["resampling"]["disabled_branches"] = ["run", "ph*", "npf*"]
    cfg = config_from_dict(raw)
    spec = input_spec(cfg, "TT")
    src = open_source(spec, demo_files["TT"])
    try:
        keys = list(src.tree.keys())
        # npfcand matches a pattern but counts the pfcand branches, which are kept
        assert needed_branches(cfg, spec, src) == [k for k in keys if k not in ("run", "phi")]
        raw["resampling"]["disabled_branches"] = []
        assert needed_branches(config_from_dict(raw), spec, src) is None   # every branch
    finally:
        src.close()


@pytest.mark.slow
def test_law_spectrum_of_a_truncated_input_fails_and_writes_nothing(demo_files, tmp_path):
    half = str(tmp_path / "inputs" / "WJets_0.root")
    os.makedirs(os.path.dirname(half))
    _cut_in_half(demo_files["WJets"], half)
    raw = tiny_raw()
    del raw["demo"]
    raw["inputs"]["datasets"] = {"WJets": {"files": [half]}}
    config = write_config(raw, tmp_path)
    data = tmp_path / "data"
    env = _law_env(tmp_path, data)
    assert _law(["index", "-q"], env).returncode == 0
    proc = _law(["run", "Spectrum", "--version", "t", "--config", config, "--workflow", "local"], env)
    assert proc.returncode != 0, proc.log[-3000:]
    line = _error_line(proc.log, f"{half}: truncated or corrupt file: branch '")
    assert re.search(r"branch '([^']+)'", line).group(1) in _unreadable_branches(half)
    # no spectrum, no temp file (the workflow's own bookkeeping aside)
    assert [f for f in _files_under(data) if "spectrum" in f or os.path.basename(f).startswith(".")] == []


# ---------------------------------------------------------------------------------------------
# shard checksums
def test_manifest_sha256_and_a_changed_basket_fails_naming_shard_and_manifest(shard_and_scaling, tmp_path):
    shard0, _, d = shard_and_scaling
    shard, manifest = str(tmp_path / "shard_0.root"), str(tmp_path / "manifest_0.json")
    shutil.copyfile(shard0, shard)
    shutil.copyfile(d / "m.json", manifest)
    assert read_json(manifest)["sha256"] == hashlib.sha256(open(shard, "rb").read()).hexdigest()
    verify_shard(shard, manifest)   # intact: passes
    _zero_basket_bytes(shard, "pfcand_dphi")
    with pytest.raises(InputError) as err:
        verify_shard(shard, manifest)
    msg = _one_line(str(err.value))
    assert msg.startswith(f"{shard}: corrupt or changed shard: sha256 ") and manifest in msg
    # a manifest without the checksum (an older version's) is refused too, naming it
    m = read_json(manifest)
    del m["sha256"]
    write_json(manifest, m)
    with pytest.raises(InputError, match=re.escape(f"{shard}: its manifest {manifest} records no sha256")):
        verify_shard(shard, manifest)


def test_hdf5_shard_sha256_and_a_changed_chunk(files_config, demo_files, tmp_path):
    raw = json.loads(json.dumps(files_config.raw))
    raw["resampling"]["output_format"] = "hdf5"
    raw["resampling"]["n_jobs"] = 1
    cfg = config_from_dict(raw, str(tmp_path / "cfg.yaml"))
    pt_e, eta_e = fine_edges(cfg)
    spectra = []
    for ds, p in demo_files.items():
        r = file_spectrum(cfg, p, ds)
        spectra.append({"dataset": ds, "path": p, "entries": r["entries"], "pt_edges": pt_e,
                        "abs_eta_edges": eta_e, "counts_flow": r["counts_flow"]})
    plan = plan_job(cfg, spectra, 0, 1)
    shard, manifest = str(tmp_path / "shard_0.h5"), str(tmp_path / "manifest_0.json")
    written = run_job(cfg, 0, plan.segments, plan.P, plan.p_class, shard, manifest, N=plan.N)
    digest = hashlib.sha256(open(shard, "rb").read()).hexdigest()
    assert written["sha256"] == read_json(manifest)["sha256"] == digest
    verify_shard(shard, manifest)
    with h5py.File(shard, "r") as f:
        names = []
        f.visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) and o.chunks else None)
        ds = f[names[0]]
        offset = ds.id.get_chunk_info(0).byte_offset
    with open(shard, "r+b") as f:
        f.seek(offset + 8)
        f.write(b"\0" * 64)
    with pytest.raises(InputError) as err:
        verify_shard(shard, manifest)
    assert _one_line(str(err.value)).startswith(f"{shard}: corrupt or changed shard") and manifest in str(err.value)


# ---------------------------------------------------------------------------------------------
# absurd moments in MergeScaling
def _job_files(cfg, shard: str, tmp_path) -> list[str]:
    paths = []
    for j in range(2):
        paths.append(str(tmp_path / f"moments_{j}.json"))
        write_json(paths[-1], feature_scaling_job(cfg, [shard]))
    return paths


def _inject(path: str, type_name: str, var: str, cone: str, per_file: bool = True, **values) -> None:
    job = read_json(path)
    targets = [job["moments"]] + ([pf["moments"] for pf in job["per_file"]] if per_file else [])
    if not per_file:
        job["per_file"] = []
    for m in targets:
        m[type_name][var][cone].update(values)
    with open(path, "w") as f:
        json.dump(job, f)   # NaN and Infinity as Python's json writes them


@pytest.mark.parametrize("values, why", [({"mean": 5.6e33}, "mean 5.6e+33"),
                                         ({"m2": 1e75}, f"above {ABSURD_MOMENT:g}"),
                                         ({"mean": float("nan")}, "not finite")])
def test_merge_scaling_refuses_absurd_moments_naming_variable_cone_and_shard(files_config, shard_and_scaling,
                                                                            tmp_path, values, why):
    shard, _, _ = shard_and_scaling
    jobs = _job_files(files_config, shard, tmp_path)
    out = tmp_path / "merged"
    write_scaling_outputs(files_config, jobs, str(out / "ok"), plots=False)   # the real moments merge
    assert os.path.exists(out / "ok" / "scaling.json")
    _inject(jobs[1], "pfcand", "dphi", "global", **values)
    with pytest.raises(ScalingError) as err:
        write_scaling_outputs(files_config, jobs, str(out / "bad"), plots=False)
    msg = _one_line(str(err.value))
    assert msg.startswith(f"{jobs[1]}: shard {shard}: variable pfcand.dphi, cone global: "), msg
    assert why in msg
    assert not os.path.exists(out / "bad")   # nothing written


def test_absurd_moments_of_a_cone_and_of_a_job_without_per_file_results(demo_files, tmp_path):
    raw = tiny_raw()
    raw["features"]["collections"]["pfcand"]["cone"] = {"coef": 3.0, "min_pt": 30.0, "min_radius": 0.05,
                                                        "outer_dR": 0.5}
    raw["export"]["sequence_names"] = {"pfcand_inner": "pfcand_inner", "pfcand_outer": "pfcand_outer"}
    cfg = config_from_dict(raw)
    jobs = _job_files(cfg, demo_files["TT"], tmp_path)
    _inject(jobs[0], "pfcand", "d0", "outer", m2=float("inf"))
    with pytest.raises(ScalingError) as err:
        write_scaling_outputs(cfg, jobs, str(tmp_path / "a"), plots=False)
    assert _one_line(str(err.value)).startswith(
        f"{jobs[0]}: shard {demo_files['TT']}: variable pfcand.d0, cone outer: mean ")
    jobs = _job_files(cfg, demo_files["TT"], tmp_path)
    _inject(jobs[1], "candidate", "mass", "global", per_file=False, mean=-2e31)
    with pytest.raises(ScalingError) as err:
        write_scaling_outputs(cfg, jobs, str(tmp_path / "b"), plots=False)
    assert _one_line(str(err.value)).startswith(f"{jobs[1]}: variable candidate.mass, cone global: mean -2e+31")
    assert not os.path.exists(tmp_path / "a") and not os.path.exists(tmp_path / "b")


# ---------------------------------------------------------------------------------------------
# the tasks, through law
@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """The tiny demo pipeline run with `law run MergeScaling` (Spectrum, shuffle, scaling)."""
    tmp = tmp_path_factory.mktemp("law")
    data = tmp / "data"
    env = _law_env(tmp, data)
    config = write_config(tiny_raw(), tmp)
    assert _law(["index", "-q"], env).returncode == 0
    proc = _law(["run", "MergeScaling", "--version", "c", "--config", config], env)
    assert proc.returncode == 0, proc.log[-3000:]
    return {"tmp": tmp, "data": data, "env": env, "config": config}


def _run(pipeline, task: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return _law(["run", task, "--version", "c", "--config", pipeline["config"], *args], env or pipeline["env"])


@pytest.mark.slow
def test_failed_strict_validation_stays_incomplete(pipeline):
    strict = ("--strict", "--max-chi2-ndf", "0")   # no achieved spectrum is exactly flat: fails
    for attempt in range(2):
        proc = _run(pipeline, "ShardValidation", *strict)
        assert proc.returncode != 0, (attempt, proc.log[-3000:])
        line = _error_line(proc.log, "RuntimeError: shard validation failed (see ")
        failed = re.search(r"\(see (\S+report\.failed\.json)\)", line).group(1)
        out_dir = os.path.dirname(failed)
        assert not read_json(failed)["passed"] and read_json(failed)["failures"]
        assert not os.path.exists(os.path.join(out_dir, "report.json")), attempt   # still incomplete
    # a lenient run completes with its (failed) report; a strict run is still not satisfied by it
    proc = _run(pipeline, "ShardValidation", "--max-chi2-ndf", "0")
    assert proc.returncode == 0, proc.log[-3000:]
    assert read_json(os.path.join(out_dir, "report.json"))["passed"] is False
    proc = _run(pipeline, "ShardValidation", *strict)
    assert proc.returncode != 0 and "shard validation failed" in proc.log


@pytest.mark.slow
def test_changed_shard_fails_every_task_that_reads_it(pipeline, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(pipeline["data"], data)
    env = _law_env(pipeline["tmp"], data)
    shutil.rmtree(next(data.glob("MergeScaling/c/*")))
    # absurd moments in a real FeatureScaling job file: MergeScaling fails, names it, writes nothing
    jobs = sorted(data.glob("FeatureScaling/c/*/files_per_job_1/moments_*.json"))
    assert len(jobs) == 2
    job = read_json(jobs[1])
    job["per_file"][0]["moments"]["pfcand"]["dphi"]["global"]["mean"] = 5.6e33
    write_json(jobs[1], job)
    proc = _run(pipeline, "MergeScaling", env=env)
    assert proc.returncode != 0
    line = _error_line(proc.log, f"{jobs[1]}: shard ")
    assert "shard_1.root: variable pfcand.dphi, cone global: mean 5.6e+33" in line
    assert list(data.glob("MergeScaling/c/*/*.json")) == []
    shutil.copyfile(next(pipeline["data"].glob(f"FeatureScaling/c/*/files_per_job_1/{jobs[1].name}")), jobs[1])

    # 64 zero bytes in a basket of shard 0: every reader of it fails first, naming shard and manifest
    shard = next(data.glob("ShuffleMergeSpectral/c/*/shard_0.root"))
    manifest = shard.parent / "manifest_0.json"
    _zero_basket_bytes(str(shard), "pfcand_dphi")
    expected = f"{shard}: corrupt or changed shard: sha256 "
    for task, args, outputs in (("FeatureScaling", ("--n-jobs", "1"), "FeatureScaling/c/*/n_jobs_1/*"),
                                ("WriteTrainSample", ("--branch", "0"), "WriteTrainSample/c/*/*"),
                                ("WeightHistogram", (), "WeightHistogram/c/*/*"),
                                ("ShardValidation", (), "ShardValidation/c/*/alpha_0.01_chi2_3/report*.json")):
        proc = _run(pipeline, task, *args, env=env)
        assert proc.returncode != 0, (task, proc.log[-3000:])
        line = _error_line(proc.log, expected)
        assert f"its manifest {manifest}" in line, (task, line)
        assert [p for p in data.glob(outputs) if p.is_file()] == [], task
    assert [f for f in _files_under(data) if os.path.basename(f).startswith(".")] == []
