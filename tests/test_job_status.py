"""What a user sees while HTCondor jobs wait, and what happens to held jobs.

The job manager of the HTCondor workflow (workflows.htcondor.TaggerflowHTCondorJobManager) reads the
output of ``condor_q``/``condor_history ... -af:lng <attributes>``, the format law's own query parses
(``Attribute = value`` per line, strings bare, ``undefined`` for missing attributes, a blank line between
jobs). There is no schedd offline: the strings below are that format, and condor_q, condor_history,
condor_rm and condor_submit are stand-in scripts configured through law's own options ([job]
htcondor_cmd_q, ...), recording their arguments."""

from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, tiny_raw, write_config

os.environ.setdefault("LAW_CONFIG_FILE", os.path.join(REPO, "law.cfg"))

import law  # noqa: E402
import luigi  # noqa: E402

import tasks.spectrum  # noqa: E402,F401
from workflows.htcondor import TaggerflowHTCondorJobManager as JM  # noqa: E402
from workflows.htcondor import TaggerflowHTCondorProxy  # noqa: E402

NOW = 1_700_000_000
DATA = Path(__file__).parent / "data" / "better_analyze"
JOB_LOGS = Path(__file__).parent / "data" / "job_logs"

# condor_q 100.0 100.1 100.2 100.3 100.4 100.5 -af:lng <JM.q_ads>
CONDOR_Q = f"""\
ClusterId = 100
ProcId = 0
JobStatus = 1
ExitCode = undefined
ExitStatus = 0
HoldReason = undefined
HoldReasonCode = undefined
HoldReasonSubCode = undefined
RemoveReason = undefined
MemoryUsage = undefined
RemoteHost = undefined
EnteredCurrentStatus = {NOW - 1500}
LastRejMatchReason = no match found
NumJobMatches = undefined
NumJobStarts = 0
RequestCpus = 4
RequestMemory = 8000
RequestGPUs = 1

ClusterId = 100
ProcId = 1
JobStatus = 5
ExitCode = undefined
ExitStatus = 0
HoldReason = Error from slot1_3@wn042.example.org: Job has gone over cgroup memory limit of 2000 megabytes. Last measured usage: 2311 megabytes.  Consider resubmitting with a higher request_memory.
HoldReasonCode = 34
HoldReasonSubCode = 0
RemoveReason = undefined
MemoryUsage = 2442
RemoteHost = undefined
EnteredCurrentStatus = {NOW - 60}
LastRejMatchReason = undefined
NumJobMatches = 1
NumJobStarts = 1
RequestCpus = 1
RequestMemory = 2000
RequestGPUs = undefined

ClusterId = 100
ProcId = 2
JobStatus = 5
ExitCode = undefined
ExitStatus = 0
HoldReason = held by "alice": wrong "config"
HoldReasonCode = 1
HoldReasonSubCode = 0
RemoveReason = undefined
MemoryUsage = 0
RemoteHost = undefined
EnteredCurrentStatus = {NOW - 30}
LastRejMatchReason = undefined
NumJobMatches = undefined
NumJobStarts = 0
RequestCpus = 1
RequestMemory = 2000
RequestGPUs = undefined

ClusterId = 100
ProcId = 3
JobStatus = 2
ExitCode = undefined
ExitStatus = 0
HoldReason = undefined
HoldReasonCode = undefined
HoldReasonSubCode = undefined
RemoveReason = undefined
MemoryUsage = 733
RemoteHost = slot1_1@wn007.example.org
EnteredCurrentStatus = {NOW - 200}
LastRejMatchReason = undefined
NumJobMatches = 1
NumJobStarts = 1
RequestCpus = 1
RequestMemory = 2000
RequestGPUs = undefined

ClusterId = 100
ProcId = 4
JobStatus = 6
ExitCode = undefined
ExitStatus = 0
HoldReason = undefined
HoldReasonCode = undefined
HoldReasonSubCode = undefined
RemoveReason = undefined
MemoryUsage = 1200
RemoteHost = slot1_2@wn007.example.org
EnteredCurrentStatus = {NOW - 5}
LastRejMatchReason = undefined
NumJobMatches = 1
NumJobStarts = 1
RequestCpus = 1
RequestMemory = 2000
RequestGPUs = undefined

ClusterId = 100
ProcId = 5
JobStatus = 5
ExitCode = undefined
ExitStatus = 0
HoldReason = The job exceeded allowed execute duration of 2:00:00
HoldReasonCode = 47
HoldReasonSubCode = 0
RemoveReason = undefined
MemoryUsage = 900
RemoteHost = undefined
EnteredCurrentStatus = {NOW - 10}
LastRejMatchReason = undefined
NumJobMatches = 1
NumJobStarts = 1
RequestCpus = 1
RequestMemory = 2000
RequestGPUs = undefined

"""

# condor_history 100.6 100.7 -af:lng <JM.h_ads>
CONDOR_HISTORY = """\
ClusterId = 100
ProcId = 6
JobStatus = 4
ExitCode = 0
ExitStatus = 0
HoldReason = undefined
HoldReasonCode = undefined
HoldReasonSubCode = undefined
RemoveReason = undefined
MemoryUsage = 612
LastRemoteHost = slot1_4@wn011.example.org

ClusterId = 100
ProcId = 7
JobStatus = 3
ExitCode = undefined
ExitStatus = 0
HoldReason = The job exceeded allowed execute duration of 2:00:00
HoldReasonCode = 47
HoldReasonSubCode = 0
RemoveReason = via condor_rm (by user alice)
MemoryUsage = 950
LastRemoteHost = slot1_4@wn011.example.org

"""


def test_parse_queue_states_and_reasons():
    data = JM.parse_long_output(CONDOR_Q, in_queue=True, now=NOW)
    assert sorted(data) == [f"100.{i}" for i in range(6)]
    status = {k: v["status"] for k, v in data.items()}
    assert status == {"100.0": JM.PENDING, "100.1": JM.FAILED, "100.2": JM.FAILED, "100.3": JM.RUNNING,
                      "100.4": JM.RUNNING, "100.5": JM.FAILED}

    idle = data["100.0"]
    assert idle["error"] is None and idle["code"] == 0
    assert idle["extra"]["pending_reason"] == \
        "requests 4 CPU(s), 8000 MB, 1 GPU(s); no matching slot yet (negotiator: no match found)"
    assert idle["extra"]["pending_since"] == NOW - 1500 and idle["extra"]["in_queue"] is True

    # held: failed, with HTCondor's reason, the code's name and what to change
    assert data["100.1"]["error"] == (
        "held (JobOutOfResources, code 34): Error from slot1_3@wn042.example.org: Job has gone over cgroup "
        "memory limit of 2000 megabytes. Last measured usage: 2311 megabytes.  Consider resubmitting with a "
        "higher request_memory. -- more memory or disk than requested: raise --htcondor-memory")
    assert data["100.1"]["extra"]["hold_code"] == 34 and data["100.1"]["extra"]["mem_peak_mb"] == 2442.0
    assert data["100.1"]["extra"]["pending_reason"] is None
    # a reason with double quotes is kept whole
    assert data["100.2"]["error"] == 'held (UserRequest, code 1): held by "alice": wrong "config" -- held with condor_hold'
    assert data["100.5"]["error"] == ("held (JobExecuteExceeded, code 47): The job exceeded allowed execute duration "
                                      "of 2:00:00 -- ran longer than requested: raise --htcondor-runtime")
    # running and transferring its output (JobStatus 6) are running, with no error
    for i in (3, 4):
        assert data[f"100.{i}"]["error"] is None and data[f"100.{i}"]["extra"]["pending_reason"] is None
    assert data["100.3"]["extra"]["remote_host"] == "slot1_1@wn007.example.org"


def test_law_alone_misses_what_is_asserted_above():
    """Why the subclass exists: law 0.1.21's parser drops a hold reason that contains a double quote,
    and reads JobStatus 6 (transferring output) as failed, which would resubmit (and remove) a job that
    is finishing."""
    law_data = law.htcondor.HTCondorJobManager.parse_long_output(CONDOR_Q)
    assert law_data["100.2"]["error"] is None
    assert law_data["100.4"]["status"] == JM.FAILED
    assert "pending_reason" not in (law_data["100.0"]["extra"] or {})


def test_parse_history():
    data = JM.parse_long_output(CONDOR_HISTORY, in_queue=False)
    assert data["100.6"]["status"] == JM.FINISHED and data["100.6"]["error"] is None
    assert data["100.6"]["extra"]["remote_host"] == "slot1_4@wn011.example.org"
    removed = data["100.7"]
    assert removed["status"] == JM.FAILED and removed["extra"]["in_queue"] is False
    assert removed["error"] == ("removed: via condor_rm (by user alice) (was held (JobExecuteExceeded, code 47): "
                                "The job exceeded allowed execute duration of 2:00:00 -- ran longer than "
                                "requested: raise --htcondor-runtime)")


@pytest.mark.parametrize("ad,expected", [
    ({"requestcpus": "1", "requestmemory": "2000"}, "requests 1 CPU(s), 2000 MB; not considered by the negotiator yet"),
    ({"requestcpus": "1", "requestmemory": "2000", "requestgpus": "2", "lastrejmatchreason": "insufficient priority",
      "numjobmatches": "0"},
     "requests 1 CPU(s), 2000 MB, 2 GPU(s); no matching slot yet (negotiator: insufficient priority)"),
    ({"requestmemory": "2000", "numjobmatches": "3"}, "requests 2000 MB; matched 3 time(s), not started yet"),
    ({"requestcpus": "1", "numjobmatches": "2", "numjobstarts": "2"},
     "requests 1 CPU(s); waiting again after 2 start(s) (evicted or restarted)"),
])
def test_idle_messages(ad, expected):
    assert JM.idle_message(ad) == expected


def test_exit_code_makes_a_failure():
    out = "ClusterId = 7\nProcId = 0\nJobStatus = 4\nExitCode = 1\nExitStatus = 0\nHoldReason = undefined\n"
    d = JM.parse_long_output(out, in_queue=False)["7.0"]
    assert (d["status"], d["code"]) == (JM.FAILED, 1)
    assert d["error"] == "job status set to 'failed' due to non-zero exit code 1"


# --- the real query and the workflow, with stand-in HTCondor commands --------------------------------

@pytest.fixture
def condor(tmp_path, monkeypatch):
    """Stand-ins for condor_q, condor_history, condor_rm, condor_submit: each records its arguments in
    calls.txt; condor_q/condor_history print q_<round>.txt/h_<round>.txt of the current round (round.txt),
    condor_q -better-analyze prints analyze.txt."""
    monkeypatch.setenv("TAGGERFLOW_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("LAW_HOME", str(tmp_path / "law_home"))
    d = tmp_path / "condor"
    d.mkdir()
    (d / "round.txt").write_text("1")
    scripts = {
        "condor_q": (f'case "$*" in *-better-analyze*) cat {d}/analyze.txt 2>/dev/null; exit;; esac; '
                     f'r=$(cat {d}/round.txt); cat {d}/q_$r.txt 2>/dev/null'),
        "condor_history": f'r=$(cat {d}/round.txt); cat {d}/h_$r.txt 2>/dev/null',
        "condor_rm": 'true',
        # one cluster per submission (one job), numbered 201, 202, ... by the submissions so far
        "condor_submit": (f'n=$(grep -c condor_submit {d}/calls.txt); '
                          'echo "1 job(s) submitted to cluster $((200 + n))."'),
    }
    cfg = law.config.Config.instance()
    saved = {}
    for name, body in scripts.items():
        path = d / name
        path.write_text(f'#!/bin/bash\necho "{name} $*" >> {d}/calls.txt\n{body}\n')
        path.chmod(0o755)
        key = {"condor_q": "htcondor_cmd_q", "condor_history": "htcondor_cmd_history", "condor_rm": "htcondor_cmd_rm",
               "condor_submit": "htcondor_cmd_submit"}[name]
        saved[key] = cfg.get("job", key)
        cfg.set("job", key, str(path))
    yield d
    for key, value in saved.items():
        cfg.set("job", key, value)


def _calls(d, name):
    path = d / "calls.txt"
    lines = path.read_text().splitlines() if path.exists() else []
    return [line.split()[1:] for line in lines if line.split()[0] == name]


def test_query_asks_condor_q_then_history(condor):
    (condor / "q_1.txt").write_text(CONDOR_Q)
    (condor / "h_1.txt").write_text(CONDOR_HISTORY)
    jm = JM()
    ids = [f"100.{i}" for i in range(8)] + ["100.9"]
    data = jm.query(ids)
    q, h = _calls(condor, "condor_q"), _calls(condor, "condor_history")
    assert q == [ids + ["-af:lng"] + JM.q_ads.split()]
    assert h == [["100.6", "100.7", "100.9", "-af:lng"] + JM.h_ads.split()]
    assert {"HoldReasonCode", "LastRejMatchReason", "NumJobMatches", "RequestGPUs", "RequestMemory"} <= set(q[0])
    assert [data[i]["status"] for i in ids] == [JM.PENDING, JM.FAILED, JM.FAILED, JM.RUNNING, JM.RUNNING, JM.FAILED,
                                                JM.FINISHED, JM.FAILED, JM.FAILED]
    assert data["100.9"]["error"] == "job not found in query response"
    assert [data[i]["extra"]["in_queue"] for i in ("100.0", "100.5", "100.6", "100.7")] == [True, True, False, False]


def _ad(cluster, proc, status, **attrs):
    lines = [f"ClusterId = {cluster}", f"ProcId = {proc}", f"JobStatus = {status}", "ExitCode = undefined",
             "ExitStatus = 0"]
    lines += [f"{k} = {v}" for k, v in attrs.items()]
    return "\n".join(lines) + "\n\n"


def _workflow(config, *extra):
    args = ["Spectrum", "--version", "s1", "--config", config, "--workflow", "htcondor", "--poll-interval", "0.001",
            "--retries", "1", *extra]
    return luigi.cmdline_parser.CmdlineParser.global_instance(args)


def test_held_jobs_leave_the_queue_and_idle_reasons_are_shown(condor, tmp_path, capfd):
    """A workflow of 4 jobs polled for real (law's poll loop, our job manager and proxy):

    round 1: job 1 idle (GPU request, no match), job 2 held (memory), jobs 3, 4 running;
    job 2 is retried: condor_rm of the held job, then a new submission (cluster 201);
    round 2: job 1 still idle, the resubmitted job 2 held again (runtime), no retry left: the workflow
    fails, and the held job and the idle job leave the queue (a later run submits again, with its own
    resources); the running jobs stay, and the user is told how to remove them. Why job 1 waits comes
    from the negotiator's analysis (condor_q -better-analyze, asked once for its cluster)."""
    from law.job.dashboard import NoJobDashboard

    config = write_config(tiny_raw(entries_per_file=200, n_files=1), tmp_path)
    gpu = {"RequestCpus": 1, "RequestMemory": 8000, "RequestGPUs": 1, "LastRejMatchReason": "no match found",
           "NumJobMatches": 0, "NumJobStarts": 0, "EnteredCurrentStatus": int(time.time()) - 1530}
    (condor / "q_1.txt").write_text(
        _ad(100, 0, 1, **gpu)
        + _ad(100, 1, 5, HoldReason="Job has gone over cgroup memory limit of 2000 megabytes.", HoldReasonCode=34,
              HoldReasonSubCode=0)
        + _ad(100, 2, 2, RemoteHost="slot1@wn1") + _ad(100, 3, 2, RemoteHost="slot2@wn1"))
    (condor / "q_2.txt").write_text(
        _ad(100, 0, 1, **gpu)
        + _ad(201, 0, 5, HoldReason="The job exceeded allowed execute duration of 0:30:00", HoldReasonCode=47)
        + _ad(100, 2, 2) + _ad(100, 3, 2))

    # the negotiator's analysis of job 100.0: a real captured output (tests/data/better_analyze) with
    # the unmatched memory request turned into the GPU request of this job
    real = (DATA / "osg_memory_v24.txt").read_text()
    (condor / "analyze.txt").write_text(
        real.replace("12635168.000", "100.000").replace("TARGET.Memory >= RequestMemory", "TARGET.GPUs >= RequestGPUs")
        .replace("RequestMemory = 8388608 (mb)", "RequestGPUs = 1"))

    rounds = iter([2])

    def next_round(poll_data):
        (condor / "round.txt").write_text(str(next(rounds, 2)))

    with _workflow(config) as cp:
        task = cp.get_task_obj()
        proxy = task.workflow_proxy
        assert isinstance(proxy, TaggerflowHTCondorProxy) and type(proxy.job_manager) is JM
        proxy.job_file_factory = proxy.create_job_file_factory()
        proxy.dashboard = NoJobDashboard()
        assert len(task.branch_map) == 4
        for num in range(1, 5):
            proxy.job_data.jobs[num] = proxy.job_data_cls.job_data(job_id=f"100.{num - 1}", branches=[num - 1])
        task.htcondor_poll_callback = next_round
        task.scheduler_messages = None  # luigi's worker sets these (a queue, and a progress callback)
        task.set_progress_percentage = lambda percentage: None
        # law binds publish_message's stdout when it is imported (here: to pytest's collection capture)
        publish = task.publish_message
        task.publish_message = lambda msg, **kwargs: publish(msg, stdout=sys.stdout, scheduler=False)
        with pytest.raises(Exception, match=r"tolerance exceeded for job\(s\) 2"):
            proxy.poll()

    out = capfd.readouterr().out
    # the first held job was removed before its resubmission, the second and the idle job when the
    # workflow failed; the running jobs stay
    assert _calls(condor, "condor_rm") == [["100.1"], ["201.0", "100.0"]]
    calls = (condor / "calls.txt").read_text().splitlines()
    assert [c.split()[0] for c in calls] == ["condor_q", "condor_q", "condor_rm", "condor_submit", "condor_q",
                                             "condor_rm"]
    assert calls[1].split()[1:3] == ["-better-analyze", "100.0"]  # once for cluster 100, not every round
    assert proxy.job_data.jobs[2]["job_id"] == "201.0"
    assert "removed 1 job(s) from the queue (superseded by a resubmission): 100.1" in out
    assert "removed 2 job(s) from the queue (the workflow failed): 201.0, 100.0" in out
    assert "2 job(s) still running, kept (a later run picks up their outputs); to remove them: condor_rm 100.2 " \
           "100.3 (or law run ... --cancel-jobs)" in out
    # what the user read: the hold reasons, and under each status line why job 1 waits
    assert "held (JobOutOfResources, code 34): Job has gone over cgroup memory limit of 2000 megabytes. " \
           "-- more memory or disk than requested: raise --htcondor-memory" in out
    assert "held (JobExecuteExceeded, code 47): The job exceeded allowed execute duration of 0:30:00" in out
    idle_lines = [line.strip() for line in out.splitlines() if line.strip().startswith("idle (")]
    assert len(idle_lines) == 2  # one per status line
    assert idle_lines[0] == idle_lines[1]
    assert idle_lines[0] == ("idle (1 job(s), longest 25 min): requests 1 CPU(s), 8000 MB, 1 GPU(s); no matching slot yet "
                             "(negotiator: no match found); can never match: no slot offers the requested GPU(s) "
                             "(RequestGPUs = 1) [TARGET.GPUs >= RequestGPUs: 0 of 9252 slots] -- lower --htcondor-gpus "
                             "or use a pool that has it")
    # the status lines themselves are law's, the idle line right below each
    status = [i for i, line in enumerate(out.splitlines()) if "all: 4, pending: 1" in line]
    assert len(status) == 2 and all(out.splitlines()[i + 1].strip().startswith("idle (") for i in status)


def test_removal_skips_jobs_that_left_the_queue(condor, tmp_path):
    """Jobs given up when polling ends normally are removed, except those only condor_history knows."""
    config = write_config(tiny_raw(entries_per_file=200, n_files=1), tmp_path)
    with _workflow(config) as cp:
        proxy = cp.get_task_obj().workflow_proxy
        jm = proxy.job_manager
        jd = proxy.job_data_cls.job_data
        proxy.job_data.jobs.update({
            1: jd(job_id="100.0", branches=[0], status=jm.FAILED),  # held, in the queue
            2: jd(job_id="100.1", branches=[1], status=jm.FAILED),  # failed with an exit code: in the history
            3: jd(job_id="100.2", branches=[2], status=jm.RETRY),  # held, about to be retried
            4: jd(job_id="100.3", branches=[3], status=jm.RUNNING),
        })
        proxy.job_data.jobs[1]["extra"]["in_queue"] = True
        proxy.job_data.jobs[2]["extra"]["in_queue"] = False
        removed = proxy.remove_jobs(proxy._given_up(), "given up")
    assert removed == ["100.0", "100.2"]
    assert _calls(condor, "condor_rm") == [["100.0", "100.2"]]


def test_pending_summary_groups_reasons(tmp_path, monkeypatch):
    monkeypatch.setenv("TAGGERFLOW_DATA", str(tmp_path / "data"))
    config = write_config(tiny_raw(entries_per_file=200, n_files=1), tmp_path)
    with _workflow(config) as cp:
        task = cp.get_task_obj()
        proxy = task.workflow_proxy
        jd = proxy.job_data_cls.job_data
        a = "requests 1 CPU(s), 8000 MB, 1 GPU(s); no matching slot yet (negotiator: no match found)"
        b = "requests 1 CPU(s), 2000 MB; not considered by the negotiator yet"
        for num, (reason, since, status) in enumerate([(a, NOW - 7300, "pending"), (a, NOW - 60, "pending"),
                                                        (b, None, "pending"), (a, NOW - 99999, "running")], 1):
            proxy.job_data.jobs[num] = jd(job_id=f"1.{num}", branches=[num - 1], status=status,
                                          extra={"pending_reason": reason, "pending_since": since})
        assert proxy.pending_summary(now=NOW) == [f"idle (2 job(s), longest 2 h 01 min): {a}", f"idle (1 job(s)): {b}"]
        line = task.modify_polling_status_line("all: 4, pending: 3")
        assert line.startswith("all: 4, pending: 3\n    idle (2 job(s), longest ") and line.endswith(f"): {b}")


def test_better_analyze_of_real_pools():
    """condor_q -better-analyze as three real pools printed it (tests/data/better_analyze): the parser
    finds the conditions and the summary counts in both formats (HTCondor 8 'machines', 23/24 'slots on
    machines'), and says in plain words what never matches and what only waits."""
    from workflows.condor_analysis import parse_better_analyze, plain_message

    osg = parse_better_analyze((DATA / "osg_memory_v24.txt").read_text())
    assert list(osg) == ["12635168.0"]
    info = osg["12635168.0"]
    assert info["attributes"] == {"RequestDisk": "10240 (kb)", "RequestMemory": "8388608 (mb)"}
    assert info["conditions"][-1] == (7, 0, "TARGET.Memory >= RequestMemory")
    assert (info["slots"], info["rejected_by_job"], info["rejected_by_slot"], info["willing"]) == (9252, 9252, 0, 0)
    assert plain_message(info) == ("can never match: no slot offers the requested memory (RequestMemory = 8388608 "
                                   "(mb)) [TARGET.Memory >= RequestMemory: 0 of 9252 slots] -- lower --htcondor-memory "
                                   "or use a pool that has it")

    chtc = parse_better_analyze((DATA / "chtc_memory_v8.txt").read_text())["98096.0"]
    assert [c[:2] for c in chtc["conditions"]] == [(1, 11227), (9, 13098), (11, 0)]
    assert (chtc["slots"], chtc["rejected_by_job"], chtc["willing"], chtc["other_users"]) == (710, 710, 0, 0)
    assert plain_message(chtc).startswith("can never match: no slot offers the requested memory (RequestMemory = "
                                          "8388608) [TARGET.Memory >= RequestMemory: 0 of 710 slots]")

    running = parse_better_analyze((DATA / "sdfarm_running_v8.txt").read_text())["3671768.0"]
    assert (running["slots"], running["rejected_by_job"], running["willing"]) == (88, 0, 88)
    assert plain_message(running) == "88 of 88 slots could run it: waiting for a free slot (user priority)"

    # every slot refusing the job by its own START policy is not the job's fault: said differently
    refused = dict(running, rejected_by_job=0, rejected_by_slot=88, willing=0)
    assert plain_message(refused).startswith("can never match as it is: all 88 slots refuse the job")
    # several jobs in one output are told apart
    both = parse_better_analyze((DATA / "osg_memory_v24.txt").read_text() + (DATA / "chtc_memory_v8.txt").read_text())
    assert sorted(both) == ["12635168.0", "98096.0"] and both["98096.0"]["slots"] == 710


def test_failed_job_reports_its_real_error(tmp_path):
    """The lines of a law job log that say why a job failed: argparse's error and law's exit reason
    (a job given a flag it cannot parse), or the task's exception."""
    from workflows.joblog import error_excerpt

    head = "-- run task branch 0 " + "-" * 60 + "\n\n-- dependency tree\n"
    usage = "usage: law run [-h] [--workers WORKERS]\n               [--sequence-names SEQUENCE_NAMES]\n" \
            "               [Required root task]\n"
    tail = "\n-- hook law_hook_job_failed 50 2 " + "-" * 40 + "\n\nfunction 'law_hook_job_failed' does not exist, " \
           "skip\n\n-- end " + "-" * 80 + "\n\njob exit code : 50\n"
    argparse_log = (head + usage + "law run: error: unrecognized arguments: --Evaluation-workflow=htcondor\n"
                    "dependency tree for task branch 0 failed (exit code 2), stop job\n" + tail)
    assert error_excerpt(argparse_log) == ("law run: error: unrecognized arguments: --Evaluation-workflow=htcondor\n"
                                           "dependency tree for task branch 0 failed (exit code 2), stop job")
    task_log = (head + "INFO: Informed scheduler that task Spectrum__1_ has status PENDING\n"
                "ERROR: [pid 12] Worker Worker(salt=1) failed    Spectrum(branch=1)\nTraceback (most recent call last):\n"
                '  File "/x/luigi/worker.py", line 210, in run\n    new_deps = self._run_get_new_deps()\n'
                "OSError: /data/demo_1.root: not a ROOT file (truncated at 200 bytes)\n"
                "===== Luigi Execution Summary =====\n\nScheduled 1 tasks of which:\n* 1 failed:\n"
                "    - 1 Spectrum(branch=1)\n\nThis progress looks :( because there were failed tasks\n\n"
                "execution of task branch 1 failed (exit code 1), stop job\n" + tail.replace("50", "60"))
    assert error_excerpt(task_log) == ("OSError: /data/demo_1.root: not a ROOT file (truncated at 200 bytes)\n"
                                       "execution of task branch 1 failed (exit code 1), stop job")


def test_log_of_a_removed_or_held_job_is_where_law_says(tmp_path, monkeypatch):
    """A job removed with condor_rm or held never transfers its stdall log back: law's `log:` of it is
    HTCondor's event log beside it (written on the submit side); a job that ended has its stdall log."""
    monkeypatch.setenv("TAGGERFLOW_DATA", str(tmp_path / "data"))
    config = write_config(tiny_raw(entries_per_file=200, n_files=1), tmp_path)
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "events_0To1.300.0.log").write_text("009 (300.000.000) Job was aborted.\n\tvia condor_rm\n")
    (logs / "stdall_1To2.300.1.txt").write_text("job exit code : 0\n")
    (logs / "events_1To2.300.1.log").write_text("005 (300.001.000) Job terminated.\n")
    with _workflow(config) as cp:
        proxy = cp.get_task_obj().workflow_proxy
        jd = proxy.job_data_cls.job_data
        removed = jd(job_id="300.0", branches=[0], status="failed", error="removed: via condor_rm",
                     extra={"log": str(logs / "stdall_0To1.300.0.txt")})
        ended = jd(job_id="300.1", branches=[1], status="failed", extra={"log": str(logs / "stdall_1To2.300.1.txt")})
        never = jd(job_id="300.2", branches=[2], status="failed", extra={"log": str(logs / "stdall_2To3.300.2.txt")})
        assert proxy.job_log(removed) == str(logs / "events_0To1.300.0.log")
        assert proxy.job_log(ended) == str(logs / "stdall_1To2.300.1.txt")
        assert proxy.job_log(never) == str(logs / "stdall_2To3.300.2.txt")  # nothing better exists
        pairs = proxy._status_error_pairs(1, removed)
        assert pairs["log"] == str(logs / "events_0To1.300.0.log")
        assert "Job was aborted." in pairs["job error"]


def test_real_failed_job_logs_give_their_real_error():
    """Real logs of failed jobs (tests/data/job_logs): the error is the job's own, not law's exit code."""
    from workflows.joblog import log_error

    assert log_error(str(JOB_LOGS / "argparse_exit2.txt")) == (
        "law run: error: unrecognized arguments: --Evaluation-workflow=htcondor\n"
        "dependency tree for task branch 0 failed (exit code 2), stop job")
    stdout, stderr = str(JOB_LOGS / "slurm_task_failed.stdout.txt"), str(JOB_LOGS / "slurm_task_failed.stderr.txt")
    real = ("taggerflow.resample.ResamplingError: group 'DY', class 'jet': empty bin pt [70, 1000) x |eta| [1.0, 2.3) "
            "(1 empty bins in all); use coarser resampling bins or set resampling.enable_emptybin: true\n"
            "execution of task branch 0 failed (exit code 40), stop job")
    assert log_error(stdout, stderr) == real
    assert log_error(stderr, stdout) == real  # whichever file is named first
    assert "task exit code: 40" in log_error(stdout)  # the log alone: its last lines
    assert log_error(str(JOB_LOGS / "missing.txt")) == ""


def test_timed_out_workflow_removes_its_idle_jobs_and_a_rerun_with_other_resources_starts_afresh(condor, tmp_path,
                                                                                                 capfd):
    """`--htcondor-gpus 1 --walltime ...` on a pool without GPUs (issue 18): when the walltime runs out,
    the idle GPU jobs leave the queue (running ones are kept, with how to remove them), and a rerun
    without --htcondor-gpus uses another submission file, so it never reconnects to the GPU jobs."""
    from law.job.dashboard import NoJobDashboard

    config = write_config(tiny_raw(entries_per_file=200, n_files=1), tmp_path)
    gpu = {"RequestCpus": 1, "RequestMemory": 2000, "RequestGPUs": 1, "LastRejMatchReason": "no match found",
           "NumJobMatches": 0, "NumJobStarts": 0, "EnteredCurrentStatus": int(time.time()) - 200}
    (condor / "q_1.txt").write_text(_ad(100, 0, 1, **gpu) + _ad(100, 1, 1, **gpu) + _ad(100, 2, 2) + _ad(100, 3, 2))
    with _workflow(config, "--htcondor-gpus", "1", "--walltime", f"{0.3 / 3600}") as cp:
        task = cp.get_task_obj()
        proxy = task.workflow_proxy
        gpu_jobs_file = proxy.output()["jobs"].path
        proxy.job_file_factory = proxy.create_job_file_factory()
        proxy.dashboard = NoJobDashboard()
        for num in range(1, 5):
            proxy.job_data.jobs[num] = proxy.job_data_cls.job_data(job_id=f"100.{num - 1}", branches=[num - 1])
        task.scheduler_messages = None
        task.set_progress_percentage = lambda percentage: None
        publish = task.publish_message
        task.publish_message = lambda msg, **kwargs: publish(msg, stdout=sys.stdout, scheduler=False)
        with pytest.raises(Exception, match="exceeded walltime"):
            proxy.poll()
    out = capfd.readouterr().out
    assert _calls(condor, "condor_rm") == [["100.0", "100.1"]]
    assert "removed 2 job(s) from the queue (the workflow failed): 100.0, 100.1" in out
    assert "to remove them: condor_rm 100.2 100.3" in out

    # the submission file is per resource request: another request, another file; the same, the same
    def jobs_file(*extra):
        with _workflow(config, *extra) as cp:
            return cp.get_task_obj().workflow_proxy.output()["jobs"].path

    assert jobs_file() != gpu_jobs_file and jobs_file("--htcondor-gpus", "1") == gpu_jobs_file
    assert jobs_file("--htcondor-memory", "4000") not in (jobs_file(), gpu_jobs_file)
    assert jobs_file("--poll-interval", "5s") == jobs_file()  # how jobs are followed is not a request
    assert os.path.dirname(jobs_file()) == os.path.dirname(gpu_jobs_file)
    assert re.fullmatch(r"htcondor_jobs_0To4_req[0-9a-f]{10}\.json", os.path.basename(gpu_jobs_file))


def test_better_analyze_drained_column_constants_gpu_properties_and_pre_8_8():
    """The layouts read from condor_q's format strings (HTCondor's analysis code; no public verbatim
    sample of them was found): the 'If Drained' second count column, constant clauses (never/always),
    the countMatches GPU clause that --htcondor-gpu-memory makes, and the pre-8.8 single-job form."""
    from workflows.condor_analysis import parse_better_analyze, plain_message

    v24 = (DATA / "osg_memory_v24.txt").read_text()
    table = ("        Slots\nStep   Matched  Condition\n----- --------- ---------\n"
             "[0]        7425  OSGVO_OS_STRING == \"RHEL 9\"\n[1]        9251  TARGET.Arch == \"X86_64\"\n"
             "[2]        7424  [0] && [1]\n[5]        9241  TARGET.Disk >= RequestDisk\n"
             "[7]           0  TARGET.Memory >= RequestMemory\n")
    assert table in v24
    drained = v24.replace(table,
                          "        Slots      If\nStep   Matched   Drained  Condition\n----- --------- --------- ---------\n"
                          "[0]        7425      0  OSGVO_OS_STRING == \"RHEL 9\"\n"
                          "[1]          always  TARGET.HasFileTransfer\n"
                          "[5]        9241      0  TARGET.Disk >= RequestDisk\n"
                          "[7]           0      3  TARGET.Memory >= RequestMemory\n"
                          "[8]           never  MY.WantSomething\n")
    info = parse_better_analyze(drained)["12635168.0"]
    # drained slots count as matching; "always" restricts nothing, "never" matches no slot
    assert info["conditions"] == [(0, 7425, 'OSGVO_OS_STRING == "RHEL 9"'), (1, None, "TARGET.HasFileTransfer"),
                                  (5, 9241, "TARGET.Disk >= RequestDisk"), (7, 3, "TARGET.Memory >= RequestMemory"),
                                  (8, 0, "MY.WantSomething")]

    gpu = v24.replace("    RequestMemory = 8388608 (mb)\n", "    RequestMemory = 8388608 (mb)\n    RequestGPUs = 1\n") \
             .replace("[5]        9241  TARGET.Disk >= RequestDisk\n[7]           0  TARGET.Memory >= RequestMemory",
                      "[5]        9241  TARGET.Disk >= RequestDisk\n"
                      "[7]           0  countMatches(MY.RequireGPUs,TARGET.AvailableGPUs) >= RequestGPUs")
    message = plain_message(parse_better_analyze(gpu)["12635168.0"])
    assert message.startswith("can never match: no slot offers the requested GPU(s) with the required properties "
                              "(RequestGPUs = 1)"), message
    assert "--htcondor-gpus / --htcondor-gpu-memory" in message

    old = v24.replace("Job 12635168.000 defines", "Your job defines") \
             .replace("for job 12635168.000 reduces", "for your job reduces")
    assert parse_better_analyze(old)["12635168.0"]["conditions"][-1] == (7, 0, "TARGET.Memory >= RequestMemory")
    assert plain_message(parse_better_analyze(old)["12635168.0"]).startswith("can never match: no slot offers the "
                                                                               "requested memory")
