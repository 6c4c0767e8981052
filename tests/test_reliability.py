"""Reliability of the whole pipeline: the same bytes wherever it runs, and after real kills.

The tiny demo pipeline, `law run Pipeline` (the README's main command: every stage from the demo
files to the evaluation report), runs as a subprocess with its own TAGGERFLOW_DATA, LAW_HOME and
configuration file path each time (never through a shared path), under umask 022:

- the reference: once, uninterrupted; the moment of every line of its output is kept;
- test_two_directories_give_the_same_bytes: once more, from a copy of the checkout at another path,
  with another TAGGERFLOW_DATA and another configuration file path (same content). Every file has the
  reference's bytes, except the documented exceptions (EXCEPTIONS, the README's list), and each of
  those does differ: the list is exact, neither too short nor stale;
- test_outputs_honour_the_umask: the reference's files are 0644, its folders 0755;
- test_killed_at_every_stage_and_rerun: in a third directory, killed with SIGKILL of its whole
  process group at KILL_POINTS (every stage: inside a demo file, a shard, WriteTrainSample, mid-epoch
  of a training, during a training checkpoint, inside ConvertLwtnn, ...), rerun after each kill, until
  a run completes. Then every file has the reference's bytes (EXCEPTIONS and RESUME_EXCEPTIONS aside,
  the latter exact too), no final name seen at a kill was changed later, and no temporary file
  remains anywhere.

A kill point is a sequence of markers (luigi's "running Task(..., branch=N" line, Keras's "Epoch n/N"
line, a file appearing under its final or temporary name) plus a seeded delay, a fraction of how long
that step took in the reference run: the kill lands inside the intended step whatever the machine's
speed, and the test checks from the output that it did (the line that ends the step never came).
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import os
import queue
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

import pytest

from conftest import REPO, tiny_raw, write_config
from test_e2e import _law_env

VERSION = "rel"
EPOCHS = 3
SEED = 20240611
RUN_TIMEOUT = 600  # seconds, one `law run`

# what a copy of the checkout needs to run the pipeline
CHECKOUT_PARTS = ("taggerflow", "tasks", "workflows", "configs", "law.cfg", "pyproject.toml")


@dataclasses.dataclass(frozen=True)
class Allowed:
    """Outputs allowed to differ: ``pattern`` is relative to TAGGERFLOW_DATA (``*`` stays within one
    directory level, ``**`` crosses levels); ``keys``: only these top-level keys of the JSON file may
    differ (None: the whole file, its name included)."""

    pattern: str
    keys: tuple[str, ...] | None
    why: str


# What differs between two clean runs of the same configuration (another TAGGERFLOW_DATA, checkout,
# configuration path). README.md, "Reproducibility", lists the same (test_readme_lists_the_exceptions).
EXCEPTIONS = (
    Allowed("Training/*/*/*/tensorboard/**", None,
            "TensorBoard event files: the name holds the wall-clock time, host and process id, the records wall times"),
    Allowed("Training/*/*/mlruns/**", None,
            "mlflow's tracking store: random experiment and run ids (directory names), start and end times"),
    Allowed("Training/*/*/*/summary.json", ("train_seconds",), "the training's wall time"),
)

# What a killed and resumed training adds (README.md: the same section)
RESUME_EXCEPTIONS = (
    Allowed("Training/*/*/*/summary.json", ("resumed_from_epoch",), "the epoch the training resumed from"),
)

# mutable while a training runs (rewritten after every epoch): compared after the run only
CHECKPOINT = "Training/*/*/*/checkpoint/**"


def _glob(pattern: str) -> re.Pattern:
    parts = re.split(r"(\*\*|\*|\?)", pattern)
    return re.compile("".join({"**": ".*", "*": "[^/]*", "?": "[^/]"}.get(p, re.escape(p)) for p in parts) + r"\Z")


def _matches(pattern: str, rel: str) -> bool:
    return bool(_glob(pattern).match(rel))


# ---------------------------------------------------------------------------------------------------
# running the pipeline


def _running(family: str, branch: int | None = None) -> str:
    """The luigi line of a task (branch) starting: "... running   Spectrum(effective_workflow=local, branch=2, ..."."""
    return rf"\brunning\s+{family}\(" + (rf".*\bbranch={branch}\b" if branch is not None else "")


def _done(family: str, branch: int | None = None) -> str:
    return rf"\bdone\s+{family}\(" + (rf".*\bbranch={branch}\b" if branch is not None else "")


# Keras's end-of-epoch line (verbose=2): "6/6 - 1s - 160ms/step - accuracy: 0.7805 - loss: ..."
EPOCH_END = r"^\d+/\d+ - .*loss"


@dataclasses.dataclass(frozen=True)
class File:
    """A step marker: a file or folder under TAGGERFLOW_DATA matching ``glob`` (hidden names
    included) appears. The globs name the final file: its temporary name contains it."""

    glob: str


@dataclasses.dataclass(frozen=True)
class KillPoint:
    """Kill ``fraction`` (seeded, uniform) of the reference's duration of a step after it starts.

    ``start``: markers met one after the other: a regular expression an output line matches, or a
    File; the last one starts the step. ``end``: the first output line after it that matches ends it."""

    name: str
    start: tuple[str | File, ...]
    end: str
    # early in the step: a rerun up to about 3 times faster than the reference (the machine's load
    # varies) still has its kill inside
    fraction: tuple[float, float] = (0.05, 0.3)
    required: bool = False  # the issue names it: it must land inside its step


# In pipeline order. With tiny_raw(): demo files DY, TT, WJets, QCD (GenerateDemoSamples and Spectrum
# branches 0-3), 2 shards, training variants deepsets and dense (branches 0, 1).
KILL_POINTS = (
    KillPoint("GenerateDemoSamples writing TT_0.root",
              (_running("GenerateDemoSamples", 1), File("GenerateDemoSamples/*/*/TT/*TT_0.root*")),
              _done("GenerateDemoSamples", 1)),
    KillPoint("Spectrum of WJets_0.root", (_running("Spectrum", 2),), _done("Spectrum", 2)),
    KillPoint("ShuffleMergeSpectral writing shard 0",
              (_running("ShuffleMergeSpectral", 0), File("ShuffleMergeSpectral/*/*/*shard_0.root*")),
              _done("ShuffleMergeSpectral", 0)),
    KillPoint("MergeScaling", (_running("MergeScaling"),), _done("MergeScaling")),
    KillPoint("WriteTrainSample writing train_1.h5",
              (_running("WriteTrainSample", 1), File("WriteTrainSample/*/*/*train_1.h5*")),
              _done("WriteTrainSample", 1), required=True),
    KillPoint("ToRecords writing train_1.tfrecord",
              (_running("ToRecords", 1), File("ToRecords/*/*/*train_1.tfrecord*")), _done("ToRecords", 1)),
    KillPoint("Training deepsets mid-epoch 2", (_running("Training", 0), r"^Epoch 2/"), EPOCH_END, required=True),
    # Keras prints the end-of-epoch line after the callbacks: the checkpoint is written before it
    KillPoint("Training dense writing the checkpoint of epoch 2",
              (_running("Training", 1), r"^Epoch 2/", File("Training/*/*/dense/checkpoint/*epoch-0002*")),
              EPOCH_END, fraction=(0.0, 0.3)),
    KillPoint("ConvertLwtnn deepsets after writing model.onnx (checks, model card)",
              (_running("ConvertLwtnn", 0), File("ConvertLwtnn/*/*/deepsets/*model.onnx*")),
              _done("ConvertLwtnn", 0), required=True),
    KillPoint("Evaluation dense (predictions, plots)", (_running("Evaluation", 1),), _done("Evaluation", 1)),
)
MIN_KILLS_INSIDE = 6
FILE_POLL = 0.005  # seconds between looks for a File marker
UMASK = 0o022  # of every run: outputs must be 0644, folders 0755


@dataclasses.dataclass
class Run:
    lines: list[tuple[float, str]]  # (seconds since the start, line)
    returncode: int
    seconds: float
    started: dict[int, tuple[float, int]]  # point index: (seconds, index in lines) when its step started
    kill: dict | None = None  # the point that killed it: index, name, delay, inside (its step)

    def tail(self, n: int = 60) -> str:
        return "\n".join(line for _, line in self.lines[-n:])

    def ended(self, point: KillPoint, i: int) -> float | None:
        """When the step of ``point`` (index i) ended: its end line after its start; None if never."""
        if i not in self.started:
            return None
        _, k = self.started[i]
        return next((t for t, line in self.lines[k:] if re.search(point.end, line)), None)


@dataclasses.dataclass
class Setup:
    """Where one run sequence runs from and writes to."""

    root: object  # its own temporary directory
    checkout: str
    env: dict
    config: str

    @property
    def data(self) -> str:
        return self.env["TAGGERFLOW_DATA"]

    def law_args(self) -> list[str]:
        return ["run", "Pipeline", "--version", VERSION, "--config", self.config]


def _law_bin() -> str:
    return shutil.which("law", path=os.path.dirname(sys.executable)) or shutil.which("law")


def _setup(root, checkout: str = REPO) -> Setup:
    """Own TAGGERFLOW_DATA, LAW_HOME and configuration file (the same content every time) under root."""
    os.makedirs(root, exist_ok=True)
    env = _law_env(root)
    env.update({"PYTHONPATH": checkout, "LAW_CONFIG_FILE": os.path.join(checkout, "law.cfg"),
                "PYTHONUNBUFFERED": "1"})  # the markers arrive when they are printed
    env.pop("SOURCE_DATE_EPOCH", None)  # reproducibility must not depend on it
    raw = tiny_raw()
    raw["training"]["epochs"] = EPOCHS
    setup = Setup(root, checkout, env, write_config(raw, root))
    subprocess.run([_law_bin(), "index", "-q"], env=env, cwd=checkout, check=True, timeout=120)
    return setup


def _watch(setup: Setup, points=(), delays: dict[str, float] | None = None) -> Run:
    """One `law run` of the pipeline in its own process group, noting when the step of each of
    ``points`` starts. With ``delays``: SIGKILL the group ``delays[name]`` s after the step of the
    first point this run reaches started (a point whose step an earlier run completed is never
    reached: its markers do not come)."""
    start = time.monotonic()
    proc = subprocess.Popen([_law_bin(), *setup.law_args()], env=setup.env, cwd=setup.checkout,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace",
                            start_new_session=True, umask=UMASK)
    lines: queue.Queue = queue.Queue()

    def read():
        for line in proc.stdout:
            lines.put((time.monotonic() - start, line.rstrip("\n")))
        lines.put(None)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    seen: list[tuple[float, str]] = []
    progress = [0] * len(points)  # how many markers of each point were met
    started: dict[int, tuple[float, int]] = {}
    kill_at = kill = None

    def met(i: int, now: float) -> None:
        nonlocal kill_at, kill
        progress[i] += 1
        if progress[i] == len(points[i].start):
            started[i] = (now, len(seen))
            if delays is not None and kill is None:
                name = points[i].name
                kill_at = time.monotonic() + delays[name]
                kill = {"index": i, "name": name, "delay": delays[name]}

    try:
        while True:
            waiting = [i for i, p in enumerate(points) if progress[i] < len(p.start)]
            on_files = [i for i in waiting if isinstance(points[i].start[progress[i]], File)]
            timeout = FILE_POLL if on_files and kill is None else 0.5
            if kill_at is not None and kill_at > time.monotonic():
                timeout = min(timeout, kill_at - time.monotonic())
            try:
                item = lines.get(timeout=timeout)
            except queue.Empty:
                item = ()
            if item is None:
                break
            if item:
                seen.append(item)
                for i in waiting:
                    marker = points[i].start[progress[i]]
                    if isinstance(marker, str) and re.search(marker, item[1]):
                        met(i, item[0])
            elif on_files and kill is None:
                for i in on_files:
                    if glob.glob(os.path.join(setup.data, points[i].start[progress[i]].glob), include_hidden=True):
                        met(i, time.monotonic() - start)
            if kill_at is not None and time.monotonic() >= kill_at and proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)  # law and everything it started
                kill_at = float("inf")
            assert time.monotonic() - start < RUN_TIMEOUT, f"law run took over {RUN_TIMEOUT} s"
        returncode = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    reader.join(timeout=10)
    run = Run(seen, returncode, time.monotonic() - start, started)
    if kill is not None and returncode == -signal.SIGKILL:
        # everything the killed group printed has been read: the step had ended before the kill if
        # its end line is there
        kill["inside"] = run.ended(points[kill["index"]], kill["index"]) is None
        run.kill = kill
    return run


def _step_durations(run: Run) -> dict[str, float]:
    """{point name: seconds from the start of its step to its end} in an uninterrupted run."""
    out = {}
    for i, point in enumerate(KILL_POINTS):
        end = run.ended(point, i)
        if end is not None:
            out[point.name] = end - run.started[i][0]
    return out


# ---------------------------------------------------------------------------------------------------
# comparing outputs


def _tree(root) -> tuple[dict[str, str], list[str]]:
    """({path relative to root: absolute path} of every file, [relative paths of every directory])."""
    files, dirs = {}, []
    for d, dnames, names in os.walk(root):
        dirs += [os.path.relpath(os.path.join(d, n), root) for n in dnames]
        for n in names:
            p = os.path.join(d, n)
            files[os.path.relpath(p, root)] = p
    return files, dirs


def _sha256(path) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


# hidden names that are no temporary files: mlflow's store keeps a folder for deleted runs
NOT_TEMPORARY = ("Training/*/*/mlruns/.trash",)


def _temporary(rel: str) -> bool:
    """A temporary name: a hidden name (".<name>.<random>...") or a "*.tmp" folder or file."""
    if any(_matches(p, rel) for p in NOT_TEMPORARY):
        return False
    return any(p.startswith(".") or p.endswith(".tmp") for p in rel.split("/"))


def _temporaries(root) -> list[str]:
    files, dirs = _tree(root)
    return sorted(r for r in list(files) + dirs if _temporary(r))


def _without_keys(path, keys) -> object:
    with open(path) as f:
        doc = json.load(f)
    return {k: v for k, v in doc.items() if k not in keys} if isinstance(doc, dict) else doc


def _allowed_by(rel: str, path: str | None, ref_path: str | None, allowed) -> list[Allowed]:
    """The entries of ``allowed`` that explain why rel differs ([] if none does)."""
    entries = [a for a in allowed if _matches(a.pattern, rel)]
    whole = [a for a in entries if a.keys is None]
    if whole:
        return whole
    if not entries or path is None or ref_path is None:
        return []
    keys = {k for a in entries for k in a.keys}
    try:
        same = _without_keys(path, keys) == _without_keys(ref_path, keys)
    except (ValueError, UnicodeDecodeError):
        return []
    return entries if same else []


def _keys_differ(path, ref_path, keys) -> bool:
    try:
        with open(path) as f, open(ref_path) as g:
            doc, ref = json.load(f), json.load(g)
    except (ValueError, UnicodeDecodeError):
        return False
    return isinstance(doc, dict) and isinstance(ref, dict) and any(doc.get(k) != ref.get(k) for k in keys)


def _stale(allowed, root, ref_root) -> list[str]:
    """The entries of ``allowed`` nothing needs: no file matching a whole-file entry differs (or is
    in one run only), no listed key differs in a file matching a keys entry."""
    files, _ = _tree(root)
    ref, _ = _tree(ref_root)
    stale = []
    for a in allowed:
        rels = [r for r in set(files) | set(ref) if _matches(a.pattern, r)]
        if a.keys is None:
            needed = any(r not in files or r not in ref or _sha256(files[r]) != _sha256(ref[r]) for r in rels)
        else:
            needed = any(r in files and r in ref and _keys_differ(files[r], ref[r], a.keys) for r in rels)
        if not needed:
            stale.append(a.pattern + (f" (keys {', '.join(a.keys)})" if a.keys else ""))
    return stale


def _first_difference(path, ref_path) -> str:
    with open(path, "rb") as f:
        a = f.read()
    with open(ref_path, "rb") as f:
        b = f.read()
    try:
        a_lines, b_lines = a.decode().splitlines(), b.decode().splitlines()
    except UnicodeDecodeError:
        at = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
        return f"binary, {len(a)} vs {len(b)} bytes (reference), first difference at byte {at}"
    for i, (x, y) in enumerate(zip(a_lines, b_lines)):
        if x != y:
            return f"line {i + 1}: {x.strip()[:160]!r} vs {y.strip()[:160]!r} (reference)"
    return f"{len(a_lines)} vs {len(b_lines)} lines (reference)"


@dataclasses.dataclass
class Comparison:
    unexplained: dict[str, str]  # rel: what differs

    def report(self, limit: int = 15) -> str:
        lines = [f"{len(self.unexplained)} files differ from the reference beyond the documented exceptions:"]
        lines += [f"  {rel}: {why}" for rel, why in sorted(self.unexplained.items())[:limit]]
        if len(self.unexplained) > limit:
            lines.append(f"  ... and {len(self.unexplained) - limit} more")
        return "\n".join(lines)


def _compare(root, ref_root, allowed) -> Comparison:
    files, _ = _tree(root)
    ref, _ = _tree(ref_root)
    unexplained = {}
    for rel in sorted(set(files) | set(ref)):
        path, ref_path = files.get(rel), ref.get(rel)
        if path is not None and ref_path is not None and _sha256(path) == _sha256(ref_path):
            continue
        if _allowed_by(rel, path, ref_path, allowed):
            continue
        if path is None:
            unexplained[rel] = "missing (the reference has it)"
        elif ref_path is None:
            unexplained[rel] = "not in the reference"
        else:
            unexplained[rel] = _first_difference(path, ref_path)
    return Comparison(unexplained)


# ---------------------------------------------------------------------------------------------------
# the runs


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    setup = _setup(tmp_path_factory.mktemp("reference"))
    run = _watch(setup, KILL_POINTS)
    assert run.returncode == 0, f"the reference run failed:\n{run.tail()}"
    files, _ = _tree(setup.data)
    # the whole pipeline ran
    assert {r.split("/")[0] for r in files} >= {"GenerateDemoSamples", "Spectrum", "ShuffleMergeSpectral",
                                                "FeatureScaling", "MergeScaling", "WriteTrainSample", "ToRecords",
                                                "Training", "ConvertLwtnn", "Evaluation", "EvaluationReport"}
    durations = _step_durations(run)
    missing = [p.name for p in KILL_POINTS if p.name not in durations]
    assert not missing, f"kill points whose markers the reference output lacks: {missing}\n{run.tail(200)}"
    print(f"reference run: {run.seconds:.1f} s, {len(files)} files; step durations (s): "
          + ", ".join(f"{k}: {v:.2f}" for k, v in durations.items()))
    return {"setup": setup, "run": run, "durations": durations}


@pytest.mark.slow
def test_two_directories_give_the_same_bytes(reference, tmp_path_factory):
    root = tmp_path_factory.mktemp("elsewhere")
    checkout = root / "checkout"
    for part in CHECKOUT_PARTS:
        src = os.path.join(REPO, part)
        (shutil.copytree(src, checkout / part, ignore=shutil.ignore_patterns("__pycache__"))
         if os.path.isdir(src) else shutil.copy2(src, checkout / part))
    setup = _setup(root / "run", checkout=str(checkout))
    # the copy's code runs, not the repository's
    where = subprocess.run([sys.executable, "-c", "import taggerflow, tasks, workflows; "
                            "print(taggerflow.__file__, tasks.__file__, workflows.__file__)"],
                           env=setup.env, cwd=setup.checkout, capture_output=True, text=True, check=True)
    assert all(p.startswith(str(checkout)) for p in where.stdout.split()), where.stdout
    assert setup.data != reference["setup"].data and setup.config != reference["setup"].config

    run = _watch(setup)
    assert run.returncode == 0, f"the second run failed:\n{run.tail()}"
    print(f"second run: {run.seconds:.1f} s")
    comparison = _compare(setup.data, reference["setup"].data, EXCEPTIONS)
    assert not comparison.unexplained, comparison.report()
    # the list is exact: each exception is needed (else it goes, from here and from the README)
    stale = _stale(EXCEPTIONS, setup.data, reference["setup"].data)
    assert not stale, f"documented exceptions that no longer differ: {stale}"
    # an uninterrupted run leaves no temporary name
    assert _temporaries(reference["setup"].data) == [] and _temporaries(setup.data) == []


@pytest.mark.slow
def test_outputs_honour_the_umask(reference):
    """Under umask 022 every output is readable by all (0644) and every folder 0755: batch jobs and
    other users of a group read them on shared storage."""
    files, dirs = _tree(reference["setup"].data)
    root = reference["setup"].data
    wrong = sorted(f"{rel}: {os.stat(os.path.join(root, rel)).st_mode & 0o777:o}" for rel in files
                   if os.stat(os.path.join(root, rel)).st_mode & 0o777 != 0o666 & ~UMASK)
    wrong += sorted(f"{rel}/: {os.stat(os.path.join(root, rel)).st_mode & 0o777:o}" for rel in dirs
                    if os.stat(os.path.join(root, rel)).st_mode & 0o777 != 0o777 & ~UMASK)
    assert not wrong, f"{len(wrong)} of {len(files) + len(dirs)} outputs with another mode than " \
                      f"{0o666 & ~UMASK:o} (files) / {0o777 & ~UMASK:o} (folders):\n  " + "\n  ".join(wrong[:20])


@pytest.mark.slow
def test_killed_at_every_stage_and_rerun(reference, tmp_path_factory):
    setup = _setup(tmp_path_factory.mktemp("killed"))
    rng = random.Random(SEED)
    delays = {p.name: round(reference["durations"][p.name] * rng.uniform(*p.fraction), 3) for p in KILL_POINTS}
    print("kill plan (s after the step started): " + ", ".join(f"{k}: {v}" for k, v in delays.items()))

    kills = []
    at_kills: dict[str, tuple[int, str]] = {}  # final name seen at a kill: (kill number, sha256 then)
    remaining = list(KILL_POINTS)
    start = time.monotonic()
    for n_run in range(1, len(KILL_POINTS) + 2):
        run = _watch(setup, remaining, delays)
        if run.kill is None:
            assert run.returncode == 0, f"run {n_run} failed (it was not killed):\n{run.tail()}"
            break
        kills.append(run.kill)
        remaining = remaining[run.kill["index"] + 1:]  # and the points whose steps this run passed
        print(f"kill {len(kills)} (run {n_run}, {run.seconds:.1f} s): {run.kill['name']} "
              f"+{run.kill['delay']} s, {'inside the step' if run.kill['inside'] else 'after the step ended'}")
        # every final name visible at a kill must be final: no later run may change it (a training's
        # checkpoint is rewritten every epoch; whole-file exceptions may change)
        files, _ = _tree(setup.data)
        for rel, path in files.items():
            if not (_temporary(rel) or _matches(CHECKPOINT, rel) or any(
                    a.keys is None and _matches(a.pattern, rel) for a in EXCEPTIONS + RESUME_EXCEPTIONS)):
                at_kills.setdefault(rel, (len(kills), _sha256(path)))
    else:
        pytest.fail(f"no run completed after {len(kills)} kills")
    print(f"chaos sequence: {len(kills)} kills, {n_run} runs, {time.monotonic() - start:.1f} s")

    problems = []
    inside = [k["name"] for k in kills if k["inside"]]
    if len(inside) < MIN_KILLS_INSIDE:
        problems.append(f"only {len(inside)} kills landed inside their step (at least {MIN_KILLS_INSIDE}): {inside}")
    missed = [p.name for p in KILL_POINTS if p.required and p.name not in inside]
    if missed:
        problems.append(f"required kill points that did not land inside their step: {missed}")
    files, _ = _tree(setup.data)
    changed = [f"{rel}: seen at kill {k}, then {'removed' if rel not in files else 'rewritten with other bytes'}"
               for rel, (k, sha) in sorted(at_kills.items()) if rel not in files or _sha256(files[rel]) != sha]
    if changed:
        problems.append("final names visible at a kill that a later run changed (half-written at the kill, "
                        "or rewritten with other bytes: not reproducible):\n  "
                        + "\n  ".join(changed[:15]) + (f"\n  ... and {len(changed) - 15} more" if len(changed) > 15 else ""))
    leftovers = _temporaries(setup.data)
    if leftovers:
        problems.append("temporary names left after the last run:\n  " + "\n  ".join(leftovers[:30]))
    comparison = _compare(setup.data, reference["setup"].data, EXCEPTIONS + RESUME_EXCEPTIONS)
    if comparison.unexplained:
        problems.append(comparison.report())
    # the trainings were resumed: what a resume adds is needed (the list is exact)
    stale = _stale(RESUME_EXCEPTIONS, setup.data, reference["setup"].data)
    if stale:
        problems.append(f"documented resume exceptions that did not differ: {stale}")
    assert not problems, "\n".join(problems)


# ---------------------------------------------------------------------------------------------------
# the README's list


def _readme_exceptions() -> list[set]:
    """The bullet lists of README.md's "Reproducibility" section as {(pattern, JSON keys or None)}:
    the first lists what differs between two clean runs, the second what a resumed training adds."""
    with open(os.path.join(REPO, "README.md")) as f:
        text = f.read()
    section = re.search(r"^### Reproducibility\n(.*?)(?=^#{1,3} )", text, re.S | re.M)
    assert section, "README.md has no '### Reproducibility' section"
    lists: list[set] = []
    in_list = False
    for line in section.group(1).splitlines():
        item = re.match(r"- `([^`]+)`(?:, keys? ([^:]+))?:", line)
        if item:
            if not in_list:
                lists.append(set())
            in_list = True
            keys = tuple(sorted(re.findall(r"`([^`]+)`", item.group(2)))) if item.group(2) else None
            lists[-1].add((item.group(1), keys))
        elif line.strip() and not line.startswith("  "):  # not a bullet's continuation: the list ended
            in_list = False
    return lists


def test_readme_lists_the_exceptions():
    lists = _readme_exceptions()
    assert len(lists) == 2, lists
    run_to_run, resume = lists
    assert run_to_run == {(a.pattern, tuple(sorted(a.keys)) if a.keys else None) for a in EXCEPTIONS}
    assert resume == {(a.pattern, tuple(sorted(a.keys)) if a.keys else None) for a in RESUME_EXCEPTIONS}


def test_exception_patterns():
    """The glob of the exception list: ``*`` within one level, ``**`` across levels."""
    assert _matches("Training/*/*/*/summary.json", "Training/v/tiny_1/deepsets/summary.json")
    assert not _matches("Training/*/*/*/summary.json", "Training/v/tiny_1/mlruns/1/2/artifacts/summary.json")
    assert _matches("Training/*/*/mlruns/**", "Training/v/tiny_1/mlruns/1/2/meta.yaml")
    assert not _matches("Training/*/*/mlruns/**", "Training/v/tiny_1/deepsets/model.keras")
    assert _temporary("A/b/.train_0.h5.x1y2.h5") and _temporary("A/.DY_0.root.abc.tmp/DY_0.root")
    assert _temporary("A/b/model.onnx.123.tmp") and not _temporary("A/b/train_0.h5")
    assert not _temporary("Training/v/tiny_1/mlruns/.trash") and _temporary("Training/v/tiny_1/mlruns/1/.x")
