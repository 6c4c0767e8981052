"""The whole tiny pipeline as batch jobs, without a pool: for every workflow stage, in DAG order, law's
own submission files are written as ``--workflow htcondor`` (or ``slurm``) writes them, and every job
of the stage is executed as its own process the way a worker runs it (tests/batch_jobs.py): an empty
scratch directory with only the transferred files, an empty environment plus exactly the submit
file's, an unprivileged user, the job's own arguments. The plain tasks between the stages
(WeightHistogram, MergeScaling, EvaluationReport) run locally, as on the submitting node. Every output
(demo files, spectra, shards, scaling, training samples, records, trainings, lwtnn/ONNX exports,
predictions and metrics, the report) must be byte-identical to ``law run Pipeline --workflow local``.

Three ways a job finds the code: the shared checkout (HTCondor and Slurm), and the repository bundle
unpacked in the scratch directory (``--htcondor-shared-fs False``), whose environment comes from
``[taggerflow_htcondor] venv_dir`` (built there once per pyproject.toml; here prepared beforehand as an
overlay of this environment: installing TensorFlow in a test would take minutes)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile

import pytest

from batch_jobs import job_user, overlay_venv, run_stage, tree_digest
from conftest import REPO, tiny_raw, write_config
import test_batch_htcondor  # noqa: F401  (sets LAW_CONFIG_FILE, registers the tasks)

import law  # noqa: E402

pytestmark = pytest.mark.slow
VERSION = "bare"
WORKFLOWS = {"GenerateDemoSamples", "Spectrum", "ShuffleMergeSpectral", "FeatureScaling", "WriteTrainSample",
             "ToRecords", "Training", "ConvertLwtnn", "Evaluation"}  # at least these run as jobs
STAGES = ["GenerateDemoSamples", "Spectrum", "ShuffleMergeSpectral", "FeatureScaling", "MergeScaling",
          "WriteTrainSample", "ToRecords", "Training", "ConvertLwtnn", "Evaluation", "EvaluationReport"]


@pytest.fixture(scope="module")
def bare():
    """A directory the job user can traverse (pytest's own is root's only), the tiny configuration,
    the reference run (`law run Pipeline`, --workflow local) and the shared-filesystem environment."""
    base = tempfile.mkdtemp(prefix="taggerflow_bare_")
    try:
        os.chmod(base, 0o755)
        user = job_user()
        config = write_config(tiny_raw(), base)
        ref = os.path.join(base, "reference")
        env = dict(os.environ, PYTHONPATH=REPO, LAW_CONFIG_FILE=os.path.join(REPO, "law.cfg"),
                   LAW_HOME=os.path.join(ref, "law_home"), TAGGERFLOW_DATA=os.path.join(ref, "data"),
                   TF_CPP_MIN_LOG_LEVEL="2")
        # the environment of the shared filesystem, which the reference run uses too: the job user may
        # need another interpreter than this one (in root's home), and npz files differ between Python
        # patch releases (zipfile's zip64 headers)
        venv = overlay_venv(os.path.join(base, "shared_venv"), user)
        proc = subprocess.run([os.path.join(venv, "bin", "law"), "run", "tasks.evaluation.Pipeline", "--version",
                               VERSION, "--config", config], env=env, cwd=REPO, capture_output=True, text=True,
                              timeout=600)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        yield {"base": base, "user": user, "config": config, "reference": tree_digest(os.path.join(ref, "data")),
               "reference_data": os.path.join(ref, "data"), "venv": venv}
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _run_pipeline(bare, mode: str, kind: str, monkeypatch) -> tuple[str, list[dict]]:
    root = os.path.join(bare["base"], mode)
    data = os.path.join(root, "data")
    os.makedirs(data)
    monkeypatch.setenv("TAGGERFLOW_DATA", data)
    monkeypatch.setenv("LAW_HOME", os.path.join(root, "law_home"))
    args = ["--version", VERSION, "--config", bare["config"]]
    batch_args = ["--htcondor-shared-fs", "False"] if mode == "htcondor_bundle" else []
    jobs = []
    for i, family in enumerate(STAGES):
        for result in run_stage(family, args, kind, os.path.join(root, "scratch"), bare["user"],
                                batch_args=batch_args, clusterid=1000 + 10 * i):
            jobs.append({"stage": family, **result})
    return data, jobs


def _assert_identical(bare, data: str) -> None:
    got = tree_digest(data, skip_dirs=("htcondor_jobs", "slurm_jobs", "jobs", "BundleRepository"))
    ref = dict(bare["reference"])
    # TensorBoard names its event files by time, host and process id, MLflow its runs by random ids
    # (both logs of the training, nothing reads them): the same number of files is all that can match
    logs = ("/tensorboard/", "/mlruns/")
    for marker in logs:
        count = lambda digest: sum(marker in p for p in digest)
        assert count(got) == count(ref) > 0, marker
    got, ref = ({p: h for p, h in d.items() if not any(m in p for m in logs)} for d in (got, ref))
    assert sorted(got) == sorted(ref), (sorted(set(got) ^ set(ref)))
    differ = sorted(p for p in ref if got[p] != ref[p] and not _same_summary(p, bare, data))
    assert not differ, f"{len(differ)} of {len(ref)} files differ from --workflow local: {differ}"
    # the deliverables are among the identical files
    for pattern in (r"^ShuffleMergeSpectral/.*/shard_1\.root$", r"^MergeScaling/.*/scaling\.json$",
                    r"^WriteTrainSample/.*/train_1\.h5$", r"^ToRecords/.*/train_1\.tfrecord$",
                    r"^Training/.*/dense/model\.keras$", r"^Training/.*/deepsets/history\.csv$",
                    r"^ConvertLwtnn/.*/deepsets/lwtnn\.json$", r"^ConvertLwtnn/.*/dense/model\.onnx$",
                    r"^ConvertLwtnn/.*/dense/model_card\.json$", r"^Evaluation/.*/deepsets/predictions_test\.h5$",
                    r"^EvaluationReport/.*/report\.md$"):
        assert any(re.search(pattern, p) for p in ref), pattern


def _same_summary(rel: str, bare, data: str) -> bool:
    """A training's summary.json records its wall time (train_seconds): the same but for that."""
    if not rel.startswith("Training/") or os.path.basename(rel) != "summary.json":
        return False
    ours, theirs = (json.load(open(os.path.join(d, rel))) for d in (data, bare["reference_data"]))
    assert ours.pop("train_seconds") > 0 and theirs.pop("train_seconds") > 0
    return ours == theirs


def _assert_run_by_job_user(bare, data: str) -> None:
    if bare["user"] is None:
        return
    uid = bare["user"][0]
    for sub in ("Spectrum", "ShuffleMergeSpectral", "Training", "Evaluation"):
        files = [os.path.join(d, f) for d, _, fs in os.walk(os.path.join(data, sub)) for f in fs
                 if "_jobs" not in d]
        assert files and all(os.stat(f).st_uid == uid for f in files), sub


def test_htcondor_shared_filesystem(bare, monkeypatch):
    monkeypatch.setenv("TAGGERFLOW_VENV", bare["venv"])
    data, jobs = _run_pipeline(bare, "htcondor_shared", "htcondor", monkeypatch)
    assert {job["stage"] for job in jobs} >= WORKFLOWS and len(jobs) >= 22
    for job in jobs:
        assert f"bootstrap: taggerflow at {REPO} (shared filesystem: true)" in job["log"], job["log"][-3000:]
        assert f"environment {bare['venv']}," in job["log"]
        assert "job exit code : 0" in job["log"]
        # nothing but the log is left in the scratch directory for HTCondor to bring back
        assert len(job["new_files"]) == 1 and job["new_files"] == set(job["fetched"]) - {
            n for n in job["fetched"] if n.startswith(("stdout", "stderr"))}
    _assert_run_by_job_user(bare, data)
    _assert_identical(bare, data)


def test_htcondor_bundle_without_shared_filesystem(bare, monkeypatch):
    import hashlib

    from workflows.bundle import DISK_MB_JOB

    monkeypatch.delenv("TAGGERFLOW_VENV", raising=False)
    venv_dir = os.path.join(bare["base"], "worker_venvs")
    os.makedirs(venv_dir)
    with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
        key = hashlib.sha256(f.read()).hexdigest()[:16]
    venv = overlay_venv(os.path.join(venv_dir, f"taggerflow-{key}"), bare["user"])
    cfg = law.config.Config.instance()
    cfg.set("taggerflow_htcondor", "venv_dir", venv_dir)
    try:
        data, jobs = _run_pipeline(bare, "htcondor_bundle", "htcondor", monkeypatch)
    finally:
        cfg.set("taggerflow_htcondor", "venv_dir", "")
    assert {job["stage"] for job in jobs} >= WORKFLOWS and len(jobs) >= 22
    scratch = os.path.join(bare["base"], "htcondor_bundle", "scratch")
    for job in jobs:
        m = re.search(r"bootstrap: taggerflow at (\S+) \(shared filesystem: false\) on \S+, environment (\S+),",
                      job["log"])
        assert m, job["log"][-3000:]
        # the job ran the bundle unpacked in its own scratch directory, with the environment of venv_dir
        assert m.group(1).startswith(scratch + os.sep) and m.group(1).endswith("/repo/taggerflow")
        assert m.group(2) == venv
        assert job["disk_kb"] < DISK_MB_JOB * 1024  # request_disk covers what the scratch directory held
    print(f"\nlargest scratch directory of a bundle job: {max(j['disk_kb'] for j in jobs)} KiB")
    _assert_run_by_job_user(bare, data)
    _assert_identical(bare, data)


def test_slurm_shared_filesystem(bare, monkeypatch):
    monkeypatch.setenv("TAGGERFLOW_VENV", bare["venv"])
    data, jobs = _run_pipeline(bare, "slurm_shared", "slurm", monkeypatch)
    assert {job["stage"] for job in jobs} >= WORKFLOWS and len(jobs) >= 22
    for job in jobs:
        assert f"bootstrap: taggerflow at {REPO} (shared filesystem: true)" in job["log"], job["log"][-3000:]
        assert "job exit code : 0" in job["log"]
    _assert_run_by_job_user(bare, data)
    _assert_identical(bare, data)


# the LLP family (issue 19): the control sample's stages (--sample control) and the adversarial
# Training as jobs, beside the main sample's; WriteTrainSample --sample control needs MergeScaling
LLP_STAGES = [("GenerateDemoSamples", []), ("Spectrum", []), ("ShuffleMergeSpectral", []), ("FeatureScaling", []),
              ("MergeScaling", []), ("WriteTrainSample", []), ("Spectrum", ["--sample", "control"]),
              ("ShuffleMergeSpectral", ["--sample", "control"]), ("WriteTrainSample", ["--sample", "control"]),
              ("Training", [])]


@pytest.mark.parametrize("kind", ["htcondor", "slurm"])
def test_adversarial_llp_training_as_jobs(bare, kind, monkeypatch):
    """The adversarial LLP training (configs/llp.yaml shrunk) stage by stage as HTCondor or Slurm jobs,
    each a bare process: every output, the control sample's spectra, shards and training files and
    the training's model, history, selection record, checkpoints and plots, byte-identical to
    ``law run Training --workflow local``."""
    from conftest import llp_tiny_raw

    monkeypatch.setenv("TAGGERFLOW_VENV", bare["venv"])
    root = os.path.join(bare["base"], f"llp_{kind}")
    os.makedirs(root)
    config = write_config(llp_tiny_raw(), root)
    args = ["--version", "llp", "--config", config]
    ref = os.path.join(root, "reference")
    env = dict(os.environ, PYTHONPATH=REPO, LAW_CONFIG_FILE=os.path.join(REPO, "law.cfg"),
               LAW_HOME=os.path.join(ref, "law_home"), TAGGERFLOW_DATA=os.path.join(ref, "data"),
               TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run([os.path.join(bare["venv"], "bin", "law"), "run", "tasks.training.Training", *args],
                          env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    reference = tree_digest(os.path.join(ref, "data"))

    data = os.path.join(root, "jobs", "data")
    os.makedirs(data)
    monkeypatch.setenv("TAGGERFLOW_DATA", data)
    monkeypatch.setenv("LAW_HOME", os.path.join(root, "jobs", "law_home"))
    jobs = []
    for i, (family, extra) in enumerate(LLP_STAGES):
        sample = "control" if extra else "main"
        for result in run_stage(family, [*args, *extra], kind, os.path.join(root, "jobs", "scratch"), bare["user"],
                                clusterid=2000 + 10 * i):
            jobs.append({"stage": family, "sample": sample, **result})
    ran = {(j["stage"], j["sample"]) for j in jobs}
    # the control sample's stages ran as jobs of their own (2 control datasets, 2 resampling jobs)
    assert {("Spectrum", "control"), ("ShuffleMergeSpectral", "control"), ("WriteTrainSample", "control"),
            ("Training", "main")} <= ran
    assert sum(j["stage"] == "Spectrum" and j["sample"] == "control" for j in jobs) == 2
    assert sum(j["stage"] == "WriteTrainSample" and j["sample"] == "control" for j in jobs) == 2
    training_log = next(j["log"] for j in jobs if j["stage"] == "Training")
    assert "adversarial training 'adversarial' (lambda 5.0)" in training_log, training_log[-3000:]
    for job in jobs:
        assert f"bootstrap: taggerflow at {REPO} (shared filesystem: true)" in job["log"], job["log"][-3000:]

    got = tree_digest(data, skip_dirs=("htcondor_jobs", "slurm_jobs", "jobs"))
    logs = ("/tensorboard/", "/mlruns/")
    got, reference = ({p: h for p, h in d.items() if not any(m in p for m in logs)} for d in (got, reference))
    assert sorted(got) == sorted(reference), sorted(set(got) ^ set(reference))
    differ = sorted(p for p in reference if got[p] != reference[p]
                    and not _same_summary(p, {"reference_data": os.path.join(ref, "data")}, data))
    assert not differ, f"{len(differ)} of {len(reference)} files differ from --workflow local: {differ}"
    for pattern in (r"^Spectrum/llp/.*control.*/spectrum_1\.npz$", r"^ShuffleMergeSpectral/llp/.*control.*/shard_1\.root$",
                    r"^WriteTrainSample/llp/.*control.*/validation_1\.h5$", r"^Training/llp/.*/adversarial/model\.keras$",
                    r"^Training/llp/.*/adversarial/history\.csv$", r"^Training/llp/.*/adversarial/selection\.json$"):
        assert any(re.search(pattern, p) for p in reference), (pattern, sorted(reference)[:40])
