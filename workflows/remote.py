"""Workflow bases: every workflow task runs with --workflow local, htcondor or slurm.

Batch parameters are ``significant=False``: they change how a task runs, never what it produces,
so they do not enter the task's identity or output paths. Site defaults live in law.cfg
([taggerflow_htcondor], [taggerflow_slurm]); per task they are set on the command line, for the
task itself (``--htcondor-memory 4000``) or for any task of the tree (``--Training-htcondor-gpus 1``),
or in law.cfg (``[luigi_Training] htcondor_gpus: 1``). Resource parameters (runtime, memory, CPUs,
GPUs, batch name) are not passed on to upstream workflows: a GPU request for the training never makes
the preprocessing jobs wait for GPUs. The other batch options (``--workflow``, ``--poll-interval``,
``--retries``, ...) are given once and reach every stage, through the plain tasks in between
(workflows.stages); a job's command line carries only its own task's parameters.

What a job needs, and how it gets it (jobs start with a bare environment):

- the job script law_job.sh, htcondor's wrapper and ``bootstrap.sh`` are sent with the job
  (HTCondor file transfer; Slurm reads them from the job file directory on the shared filesystem);
- the environment variables of ``job_environment()`` (``PATH``, ``TAGGERFLOW_DATA`` at least) are set
  explicitly (HTCondor ``environment`` with ``getenv = false``; Slurm ``--export=NONE,...``);
- ``bootstrap.sh`` sources the checkout's ``env.sh`` (shared filesystem), or unpacks the repository
  bundle sent with the job and creates the environment with ``env.sh`` (``--htcondor-shared-fs False``);
- the branch runs with law's local scheduler (``[luigi_core] local_scheduler``) and the default
  ``--workflow local``, so a job never submits jobs itself;
- logs: one set per attempt, named by the batch job id (a retry never overwrites the failed
  attempt's log), in ``<task output>/<system>_jobs/logs/``; only the log comes back from an
  HTCondor job (explicit ``transfer_output_files``), outputs are written to ``TAGGERFLOW_DATA``.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import time
from collections import OrderedDict

import law
import luigi
from law.contrib.htcondor.workflow import HTCondorWorkflowProxy as _LawHTCondorProxy
from law.contrib.slurm.workflow import SlurmWorkflowProxy as _LawSlurmProxy
from law.util import interruptable_popen, iter_chunks, merge_dicts, quote_cmd

from workflows.base import BASE_DIR, Task, data_dir
from workflows.bundle import BundleRepository, job_disk_mb
from workflows.collection import ListedFileCollection

law.contrib.load("htcondor", "slurm")

_TRUE = {"1", "true", "yes", "on"}


def _cfg(section: str, option: str, default):
    value = law.config.get_expanded(section, option, default)
    return value if value not in (None, "") else default


def _cfg_bool(section: str, option: str, default: bool) -> bool:
    value = _cfg(section, option, None)
    return default if value is None else str(value).strip().lower() in _TRUE


def condor_environment(env: dict[str, str]) -> str:
    """``env`` in HTCondor's (new) environment syntax: values with spaces or quotes are single-quoted,
    a single quote doubled; law wraps the whole string in double quotes (a double quote is doubled)."""
    parts = []
    for key, value in env.items():
        value = str(value).replace('"', '""')
        if any(c.isspace() for c in value) or "'" in value:
            value = "'" + value.replace("'", "''") + "'"
        parts.append(f"{key}={value}")
    return " ".join(parts)


class _BatchMixin:
    """Pieces shared by the HTCondor and Slurm workflows (``kind`` is "htcondor" or "slurm")."""

    def _shared_fs(self, kind: str) -> bool:
        return bool(getattr(self, f"{kind}_shared_fs"))

    def _resources_key(self, names) -> str:
        """A short key of the values of the parameters ``names`` (the resource request)."""
        import hashlib

        text = ";".join(f"{name}={getattr(self, name)!r}" for name in sorted(names))
        return "req" + hashlib.sha256(text.encode()).hexdigest()[:10]

    def _job_dir(self, kind: str):
        return law.LocalDirectoryTarget(self.local_path(f"{kind}_jobs"))

    def _log_dir(self, kind: str):
        custom = _cfg(f"taggerflow_{kind}", "log_dir", "")
        if custom:
            return law.LocalDirectoryTarget(os.path.join(os.path.expandvars(os.path.expanduser(custom)),
                                                         *self.store_parts()))
        return self._job_dir(kind).child("logs", type="d")

    def _bootstrap(self):
        return law.JobInputFile(os.path.join(BASE_DIR, "bootstrap.sh"), share=True, render_job=True)

    def _bundle(self):
        return BundleRepository.of_checkout()

    def job_environment(self, kind: str) -> dict[str, str]:
        """The environment variables a job gets explicitly (nothing else reaches it)."""
        # a bare job has no PATH: bootstrap.sh and env.sh need bash, tar and python3.x (venv)
        env = {"PATH": _cfg(f"taggerflow_{kind}", "job_path", "/usr/local/bin:/usr/bin:/bin"),
               "TAGGERFLOW_DATA": data_dir()}
        if self._shared_fs(kind):
            if os.environ.get("TAGGERFLOW_VENV"):
                env["TAGGERFLOW_VENV"] = os.environ["TAGGERFLOW_VENV"]
        else:
            job_venv = _cfg(f"taggerflow_{kind}", "job_venv", "")
            if job_venv:
                env["TAGGERFLOW_VENV"] = job_venv
        for name in str(_cfg(f"taggerflow_{kind}", "forward_env", "")).replace(",", " ").split():
            if name in os.environ:
                env[name] = os.environ[name]
        return env

    def _job_cmdline_args(self, kind: str) -> dict[str, str]:
        # the job runs in its own directory: the configuration by absolute path (shared filesystem)
        # or by the name of the copy sent with the job
        path = self.cfg.path
        return {"--config": path if self._shared_fs(kind) else os.path.basename(path)}

    def _own_job_arguments(self, arguments):
        # a job runs exactly its own branch: of the global arguments law forwards, only those of the
        # tasks the branch depends on (workflows.stages.job_global_args)
        from workflows.stages import restrict_job_arguments

        return restrict_job_arguments(self, arguments)

    def _prepare(self, config, kind: str):
        shared = self._shared_fs(kind)
        config.render_variables["taggerflow_base"] = BASE_DIR
        config.render_variables["taggerflow_data"] = data_dir()
        config.render_variables["taggerflow_shared_fs"] = "true" if shared else "false"
        config.render_variables.setdefault("taggerflow_bundle", "")
        # no shared filesystem: where the workers build one environment per dependency set (empty: per job)
        config.render_variables["taggerflow_venv_dir"] = _cfg(f"taggerflow_{kind}", "venv_dir", "")
        if not shared:
            # sent with the job, not copied into the job file directory (rendered as its basename)
            config.input_files["taggerflow_bundle"] = law.JobInputFile(self._bundle().output().path, copy=False)
            config.input_files["taggerflow_config"] = law.JobInputFile(self.cfg.path, copy=False)
        return config


# HTCondor's hold reason codes (condor_holdcodes.h), the ones a taggerflow job meets, with what to do
HOLD_CODES = {
    0: ("Unspecified", ""),
    1: ("UserRequest", "held with condor_hold"),
    3: ("JobPolicy", "the job's periodic_hold expression"),
    6: ("FailedToCreateProcess", "the job script could not be started"),
    7: ("UnableToOpenOutput", ""),
    8: ("UnableToOpenInput", ""),
    12: ("TransferOutputError", "the job's log could not be transferred back"),
    13: ("TransferInputError", "an input file (job script, bootstrap, bundle, config) could not be transferred"),
    14: ("IwdError", "the job file directory is not accessible"),
    15: ("SubmittedOnHold", ""),
    21: ("StartdHeldJob", "the execute point's policy"),
    22: ("UnableToInitUserLog", "the event log directory is not writable"),
    26: ("SystemPolicy", "the pool's SYSTEM_PERIODIC_HOLD (often memory or runtime limits)"),
    32: ("MaxTransferInputSizeExceeded", ""),
    33: ("MaxTransferOutputSizeExceeded", ""),
    34: ("JobOutOfResources", "more memory or disk than requested: raise --htcondor-memory"),
    46: ("JobDurationExceeded", "longer than allowed_job_duration"),
    47: ("JobExecuteExceeded", "ran longer than requested: raise --htcondor-runtime"),
}

_AD_LINE = re.compile(r"^(\w+) = ?(.*)$")


def _ad_value(text: str):
    """A value as ``condor_q -af:l`` prints it (strings bare; quoted with ``:V``): None if undefined."""
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] == '"':
        text = text[1:-1].replace('\\"', '"')
    return None if text.lower() in ("undefined", "") else text


def _int(value) -> int | None:
    try:
        return int(float(value))
    except (TypeError, ValueError):
        return None


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds} s"
    minutes = seconds // 60
    if minutes < 120:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60:02d} min"


class TaggerflowHTCondorJobManager(law.htcondor.HTCondorJobManager):
    """law's HTCondor job manager telling why a job waits or was held.

    The queue query asks for the hold reason (text, code, subcode), and for idle jobs the negotiator's
    last word (``LastRejMatchReason``, ``NumJobMatches``), the job's starts and its resource request.
    A held job is failed with ``held (<code name>, code <n>[/<subcode>]): <HoldReason>[ -- <hint>]`` as
    its error (law prints it, resubmits the job, and the workflow proxy removes the held one from the
    queue); an idle job stays pending with ``extra["pending_reason"]`` (e.g. ``requests 1 CPU(s),
    8000 MB, 1 GPU(s); no matching slot yet (negotiator: no match found)``), which the polling status
    line summarises. Job states 6 (transferring output) and 7 (suspended), which law's own mapping
    reads as failed, are running. ``extra["in_queue"]`` says whether the job was found by condor_q
    (True) or only by condor_history (False): only the former can need a condor_rm."""

    q_ads = ("ClusterId ProcId JobStatus ExitCode ExitStatus HoldReason HoldReasonCode HoldReasonSubCode "
             "RemoveReason MemoryUsage RemoteHost EnteredCurrentStatus LastRejMatchReason NumJobMatches "
             "NumJobStarts RequestCpus RequestMemory RequestGPUs")
    h_ads = ("ClusterId ProcId JobStatus ExitCode ExitStatus HoldReason HoldReasonCode HoldReasonSubCode "
             "RemoveReason MemoryUsage LastRemoteHost")

    def _condor(self, base_cmd: str, job_ids, ads: str, pool, scheduler, _processes):
        cmd = shlex.split(law.config.get_expanded("job", base_cmd)) + list(job_ids)
        if pool:
            cmd += ["-pool", pool]
        if scheduler:
            cmd += ["-name", scheduler]
        cmd += ["-af:lng"] + ads.split()
        if self.htcondor_ge_v833:
            cmd += ["-limit", str(len(job_ids))]
        cfg = law.config.Config.instance()
        timeout = cfg.get_expanded("job", cfg.find_option("job", "htcondor_job_query_timeout", "job_query_timeout"))
        if timeout:
            cmd = self.prepend_timeout_command(cmd, law.util.parse_duration(timeout, input_unit="s"))
        return interruptable_popen(quote_cmd(cmd), shell=True, executable="/bin/bash", stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, kill_timeout=2, processes=_processes)

    def query(self, job_id, pool=None, scheduler=None, user=None, silent=False, _processes=None):
        # law's query (condor_q, then condor_history for the jobs that left the queue) with more attributes
        pool = self.pool if pool is None else pool
        scheduler = self.scheduler if scheduler is None else scheduler
        chunking = isinstance(job_id, (list, tuple))
        job_ids = law.util.make_list(job_id)

        code, out, err = self._condor("htcondor_cmd_q", job_ids, self.q_ads, pool, scheduler, _processes)
        if code != 0:
            if silent:
                return None
            raise Exception(f"queue query of htcondor job(s) '{job_id}' failed with code {code}:\n{err}")
        data = self.parse_long_output(out, in_queue=True)

        missing = [i for i in job_ids if i not in data]
        if missing:
            code, out, err = self._condor("htcondor_cmd_history", missing, self.h_ads, pool, scheduler, _processes)
            if code != 0:
                if silent:
                    return None
                raise Exception(f"history query of htcondor job(s) '{job_id}' failed with code {code}:\n{err}")
            data.update(self.parse_long_output(out, in_queue=False))

        for i in job_ids:
            if i not in data:
                if not chunking:
                    if silent:
                        return None
                    raise Exception(f"htcondor job(s) '{job_id}' not found in query response")
                data[i] = self.job_status_dict(job_id=i, status=self.FAILED, error="job not found in query response")
        return data if chunking else data[job_id]

    @classmethod
    def parse_long_output(cls, out, in_queue=None, now=None):
        """Job status dicts by job id from ``condor_q``/``condor_history -af:lng`` output: one
        ``Attribute = value`` per line, a blank line between jobs."""
        now = time.time() if now is None else now
        query_data = {}
        for block in re.split(r"\n[ \t]*\n", out.strip()):
            ad = {}
            for line in block.splitlines():
                m = _AD_LINE.match(line.strip())
                if m:
                    ad[m.group(1).lower()] = _ad_value(m.group(2))
            if ad.get("clusterid") is None or ad.get("procid") is None:
                continue
            job_id = f"{ad['clusterid']}.{ad['procid']}"
            flag = ad.get("jobstatus")
            status = cls.map_status(flag)

            code = 0
            for key in ("exitcode", "exitstatus"):
                if (ad.get(key) or "").isdigit():
                    code = int(ad[key])
                    break

            error = None
            if flag == "5":
                error = cls.hold_message(ad)
            if ad.get("removereason"):
                error = f"removed: {ad['removereason']}"
                if ad.get("holdreason"):
                    error += f" (was {cls.hold_message(ad)})"
            if code != 0 and status != cls.FAILED:
                status = cls.FAILED
                error = error or f"job status set to '{cls.FAILED}' due to non-zero exit code {code}"

            extra = {"in_queue": in_queue, "pending_reason": None, "pending_since": None,
                     "hold_code": _int(ad.get("holdreasoncode")) if flag == "5" else None}
            if "memoryusage" in ad:
                mem = ad.get("memoryusage") or ""
                extra["mem_peak_mb"] = float(mem) if mem.isdigit() else None
            host = ad.get("remotehost") or ad.get("lastremotehost")
            if "remotehost" in ad or "lastremotehost" in ad:
                extra["remote_host"] = host
            if flag == "1":
                extra["pending_reason"] = cls.idle_message(ad)
                extra["pending_since"] = _int(ad.get("enteredcurrentstatus"))

            query_data[job_id] = cls.job_status_dict(job_id=job_id, status=status, code=code, error=error,
                                                     extra=extra)
        return query_data

    @classmethod
    def map_status(cls, status_flag):
        # JobStatus: 1 idle, 2 running, 3 removed, 4 completed, 5 held, 6 transferring output, 7 suspended
        if status_flag in ("0", "1", "U", "I"):
            return cls.PENDING
        if status_flag in ("2", "6", "7", "R", "S", ">"):
            return cls.RUNNING
        if status_flag in ("4", "C"):
            return cls.FINISHED
        return cls.FAILED

    @staticmethod
    def hold_message(ad: dict) -> str:
        code, sub = _int(ad.get("holdreasoncode")), _int(ad.get("holdreasonsubcode"))
        name, hint = HOLD_CODES.get(code, ("", ""))
        label = "held"
        if code is not None:
            label += f" ({name + ', ' if name else ''}code {code}{f'/{sub}' if sub else ''})"
        msg = f"{label}: {ad.get('holdreason') or 'no reason given'}"
        return msg + (f" -- {hint}" if hint else "")

    def analyze(self, job_id: str, pool=None, scheduler=None) -> str | None:
        """The negotiator's analysis of the idle job ``job_id`` (``condor_q -better-analyze``) in plain
        words (workflows.condor_analysis), or None when it cannot be had or says nothing useful."""
        from workflows.condor_analysis import parse_better_analyze, plain_message

        pool = self.pool if pool is None else pool
        scheduler = self.scheduler if scheduler is None else scheduler
        cmd = shlex.split(law.config.get_expanded("job", "htcondor_cmd_q")) + ["-better-analyze", str(job_id)]
        if pool:
            cmd += ["-pool", pool]
        if scheduler:
            cmd += ["-name", scheduler]
        cmd = self.prepend_timeout_command(cmd, 60)
        try:
            code, out, _ = interruptable_popen(quote_cmd(cmd), shell=True, executable="/bin/bash",
                                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, kill_timeout=2)
        except Exception:
            return None
        info = parse_better_analyze(out or "").get(str(job_id)) if code == 0 else None
        return plain_message(info) if info else None

    @staticmethod
    def idle_message(ad: dict) -> str:
        """Why an idle job waits: what it requests and what the negotiator said."""
        req = []
        cpus, mem, gpus = _int(ad.get("requestcpus")), _int(ad.get("requestmemory")), _int(ad.get("requestgpus"))
        if cpus:
            req.append(f"{cpus} CPU(s)")
        if mem:
            req.append(f"{mem} MB")
        if gpus:
            req.append(f"{gpus} GPU(s)")
        matches, starts = _int(ad.get("numjobmatches")) or 0, _int(ad.get("numjobstarts")) or 0
        rejected = ad.get("lastrejmatchreason")
        if starts > 0:
            state = f"waiting again after {starts} start(s) (evicted or restarted)"
        elif matches > 0 and not rejected:
            state = f"matched {matches} time(s), not started yet"
        elif rejected:
            state = f"no matching slot yet (negotiator: {rejected})"
        else:
            state = "not considered by the negotiator yet"
        return (f"requests {', '.join(req)}; " if req else "") + state


class _JobErrorsMixin:
    """A failed job is reported with its real error (workflows.joblog: the exception or argparse line
    of its log and law's exit reason) under law's status line, and a failed workflow's error names
    them, instead of law's generic exit-code text alone."""

    def job_log(self, data) -> str | None:
        """The log of a job as law recorded it (the workflows refine where it is)."""
        log = (data.get("extra") or {}).get("log")
        return log if isinstance(log, str) else None

    def job_error(self, data) -> str:
        """The lines of the job's log (and stderr file) that say why it failed."""
        from workflows.joblog import log_error

        return log_error(self.job_log(data), (data.get("extra") or {}).get("stderr"))

    def _status_error_pairs(self, job_num, job_data):
        pairs = super()._status_error_pairs(job_num, job_data)
        log = self.job_log(job_data)
        if log:
            pairs["log"] = log
        excerpt = self.job_error(job_data)
        if excerpt:
            pairs["job error"] = ("\n" + excerpt).replace("\n", "\n        ")
        return pairs

    def failure_details(self, job_nums) -> str:
        lines = []
        for num in job_nums:
            data = self.job_data.jobs.get(num) or {}
            log = self.job_log(data)
            excerpt = self.job_error(data)
            head = f"job {num} (branches {data.get('branches')}, id {data.get('job_id')}): {data.get('error') or ''}"
            code_text = self.job_error_messages.get(data.get("code"))
            if code_text:
                head += f" [law job script: {code_text}]"
            lines.append(head.rstrip())
            if excerpt:
                lines.extend("    " + line for line in excerpt.splitlines())
            if log:
                lines.append(f"    log: {log}")
        return "\n".join(lines)

    def _failed_nums(self) -> list:
        states = (self.job_manager.FAILED, self.job_manager.RETRY)
        return [n for n, d in self.job_data.jobs.items() if d.get("status") in states]

    def poll(self):
        try:
            return super().poll()
        except Exception as e:
            details = self.failure_details(self._failed_nums()[:5])
            if details:
                raise Exception(f"{e}; {self.task.task_id}:\n{details}") from e
            raise


class TaggerflowHTCondorProxy(_JobErrorsMixin, _LawHTCondorProxy):
    """law's HTCondor proxy, removing jobs from the queue that law gave up on: the held or failed job
    of a branch that is resubmitted, the failed jobs (and those about to be retried) when the workflow
    fails, and failed jobs still in the queue when polling ends; and summarising why jobs are idle."""

    def submit(self, retry_jobs=None):
        if retry_jobs:
            self.remove_jobs(list(retry_jobs), "superseded by a resubmission")
        return super().submit(retry_jobs=retry_jobs)

    def _given_up(self) -> list:
        states = (self.job_manager.FAILED, self.job_manager.RETRY)
        return [n for n, d in self.job_data.jobs.items() if d.get("status") in states]

    def job_log(self, data) -> str | None:
        # the combined log (stdall) comes back with the job's file transfer, which a removed or held job
        # never does; its story (submitted, executing, held/aborted with the reason) is in HTCondor's
        # event log beside it, written on the submit side
        log = super().job_log(data)
        if not log or os.path.exists(log):
            return log
        events = os.path.join(os.path.dirname(log), re.sub(r"^stdall_([^.]*)\.(.*)\.txt$", r"events_\1.\2.log",
                                                           os.path.basename(log)))
        return events if events != log and os.path.exists(events) else log

    def poll(self):
        try:
            result = super().poll()
        except Exception:
            # a failed or timed-out workflow leaves nothing idle behind: its failed (held) jobs and
            # its idle jobs leave the queue (a later run submits again, with its own resources)
            try:
                self.remove_jobs(self._given_up() + self._idle(), "the workflow failed")
                running = [d["job_id"] for d in self.job_data.jobs.values()
                           if d.get("status") == self.job_manager.RUNNING]
                if running:
                    self.task.publish_message(
                        f"{len(running)} job(s) still running, kept (a later run picks up their outputs); to "
                        f"remove them: condor_rm {' '.join(map(str, running))} (or law run ... --cancel-jobs)")
            except Exception as e:  # never hide why the workflow failed
                self.task.publish_message(f"removing failed jobs from the queue failed: {e}")
            raise
        # polling ended (acceptance reached, or no polling wanted): failed jobs still queued (held) go
        self.remove_jobs(self._given_up(), "given up")
        return result

    def _idle(self) -> list:
        return [n for n, d in self.job_data.jobs.items() if d.get("status") == self.job_manager.PENDING
                and d.get("job_id") not in (None, self.job_data.dummy_job_id)]

    def remove_jobs(self, job_nums, why: str) -> list:
        """condor_rm the jobs ``job_nums`` that may still be queued (not found only in the history)."""
        datas = [self.job_data.jobs[n] for n in job_nums if n in self.job_data.jobs]
        ids = [d["job_id"] for d in datas if (d.get("extra") or {}).get("in_queue") is not False]
        ids = [i for i in ids if i not in (None, self.job_data.dummy_job_id)]
        if not ids:
            return []
        kwargs = merge_dicts(self._setup_job_manager(), self._get_job_kwargs("cancel"), {"silent": True})
        if self.job_manager.job_grouping_cancel:
            self.job_manager.cancel_group(ids, **kwargs)
        else:
            self.job_manager.cancel_batch(ids, **kwargs)
        self.task.publish_message(f"removed {len(ids)} job(s) from the queue ({why}): {', '.join(map(str, ids))}")
        return ids

    # seconds between two analyses of the idle jobs of one cluster (condor_q -better-analyze is slow)
    analysis_interval = 300

    def analysis(self, job_id, now=None) -> str | None:
        """The negotiator's analysis of an idle job in plain words, once per cluster and interval."""
        now = time.time() if now is None else now
        cache = self.__dict__.setdefault("_analyses", {})
        cluster = str(job_id).split(".")[0]
        if cluster not in cache or now - cache[cluster][0] > self.analysis_interval:
            kwargs = self._setup_job_manager()
            cache[cluster] = (now, self.job_manager.analyze(str(job_id), pool=kwargs.get("pool"),
                                                            scheduler=kwargs.get("scheduler")))
        return cache[cluster][1]

    def pending_summary(self, max_groups: int = 3, now=None) -> list[str]:
        """One line per distinct reason of the idle jobs: count, longest wait, reason."""
        now = time.time() if now is None else now
        groups: OrderedDict[str, list] = OrderedDict()
        for data in self.job_data.jobs.values():
            extra = data.get("extra") or {}
            if data.get("status") != self.job_manager.PENDING or not extra.get("pending_reason"):
                continue
            group = groups.setdefault(extra["pending_reason"], [0, None, data.get("job_id")])
            group[0] += 1
            since = extra.get("pending_since")
            if since is not None and (group[1] is None or since < group[1]):
                group[1] = since
        lines = []
        for reason, (n, since, job_id) in list(groups.items())[:max_groups]:
            wait = f", longest {_duration(now - since)}" if since is not None else ""
            analysis = self.analysis(job_id, now) if "no matching slot" in reason else None
            lines.append(f"idle ({n} job(s){wait}): {reason}" + (f"; {analysis}" if analysis else ""))
        if len(groups) > max_groups:
            lines.append(f"... and {len(groups) - max_groups} more reason(s)")
        return lines


class HTCondorWorkflow(_BatchMixin, law.htcondor.HTCondorWorkflow):
    workflow_proxy_cls = TaggerflowHTCondorProxy

    htcondor_runtime = law.DurationParameter(default=float(_cfg("taggerflow_htcondor", "runtime", 2.0)),
                                             unit="h", significant=False,
                                             description="maximum runtime per job (a longer job is held); "
                                             "default unit hours; default: law.cfg, 2h")
    htcondor_memory = law.BytesParameter(default=float(_cfg("taggerflow_htcondor", "memory", 2000)),
                                         unit="MB", significant=False,
                                         description="requested memory per job; default unit MB; default: 2000MB")
    htcondor_cpus = luigi.IntParameter(default=int(_cfg("taggerflow_htcondor", "cpus", 1)), significant=False,
                                       description="CPUs per job; default: 1")
    htcondor_gpus = luigi.IntParameter(default=int(_cfg("taggerflow_htcondor", "gpus", 0)), significant=False,
                                       description="GPUs per job; default: 0")
    htcondor_gpu_memory = law.BytesParameter(default=float(_cfg("taggerflow_htcondor", "gpu_memory", 0)),
                                             unit="MB", significant=False,
                                             description="minimum memory of the GPU(s); default unit MB; 0: any")
    htcondor_flavor = luigi.ChoiceParameter(default=_cfg("taggerflow_htcondor", "flavor", "default"),
                                            choices=("default", "cern", "naf"), significant=False,
                                            description="site conventions for the runtime request: cern "
                                            "(+MaxRuntime), naf (+RequestRuntime); default: law.cfg")
    htcondor_accounting_group = luigi.Parameter(default=_cfg("taggerflow_htcondor", "accounting_group", ""),
                                                significant=False, description="accounting group; default: none")
    htcondor_requirements = luigi.Parameter(default=_cfg("taggerflow_htcondor", "requirements", ""),
                                            significant=False, description="extra requirements expression")
    htcondor_batch_name = luigi.Parameter(default="", significant=False,
                                          description="batch name shown by condor_q; default: <Task>_<version>")
    htcondor_shared_fs = luigi.BoolParameter(default=_cfg_bool("taggerflow_htcondor", "shared_fs", True),
                                             parsing=luigi.BoolParameter.EXPLICIT_PARSING, significant=False,
                                             description="workers see the checkout and its environment; False: "
                                             "send a bundle of the repository and create the environment in the "
                                             "job; default: law.cfg, True")

    _htcondor_resources = {"htcondor_runtime", "htcondor_memory", "htcondor_cpus", "htcondor_gpus",
                           "htcondor_gpu_memory", "htcondor_batch_name"}
    exclude_params_branch = _htcondor_resources | {"htcondor_flavor", "htcondor_accounting_group",
                                                   "htcondor_requirements", "htcondor_shared_fs"}
    exclude_params_req = set(_htcondor_resources)

    def htcondor_output_directory(self):
        return self._job_dir("htcondor")

    def htcondor_output_postfix(self):
        # the submission data (htcondor_jobs_<postfix>.json) is per resource request: a later run
        # asking for other resources submits its own jobs instead of reconnecting to those of this one
        return self._resources_key(self._htcondor_resources - {"htcondor_batch_name"}
                                   | {"htcondor_flavor", "htcondor_accounting_group", "htcondor_requirements",
                                      "htcondor_shared_fs"})

    def htcondor_job_manager_cls(self):
        return TaggerflowHTCondorJobManager

    def modify_polling_status_line(self, status_line):
        # below law's status line: why idle HTCondor jobs wait (held jobs are failed, with their reason)
        line = super().modify_polling_status_line(status_line)
        proxy = self.workflow_proxy
        if isinstance(proxy, TaggerflowHTCondorProxy):
            line += "".join(f"\n    {extra}" for extra in proxy.pending_summary())
        return line

    def htcondor_log_directory(self):
        return self._log_dir("htcondor")

    def htcondor_bootstrap_file(self):
        return self._bootstrap()

    def htcondor_workflow_requires(self):
        reqs = super().htcondor_workflow_requires()
        if not self.htcondor_shared_fs:
            reqs["bundle"] = self._bundle()
        return reqs

    def htcondor_cmdline_args(self):
        return self._job_cmdline_args("htcondor")

    def htcondor_job_config(self, config, job_num, branches):
        self._prepare(config, "htcondor")
        config.arguments = self._own_job_arguments(config.arguments)
        # one log set per attempt: a resubmission is a new cluster; law postfixes the branch range
        grouped = isinstance(job_num, (list, tuple))
        attempt_id = "$(ClusterId).$(ProcId)" if grouped else \
            f"a{self.workflow_proxy.job_data.attempts.get(job_num, 0)}.{time.strftime('%Y%m%dT%H%M%S')}"
        log_dir = self.htcondor_log_directory()
        log_dir.touch()
        config.custom_log_file = f"stdall.{attempt_id}.txt"  # the job's combined output, transferred back
        config.stdout = f"stdout.{attempt_id}.txt"
        config.stderr = f"stderr.{attempt_id}.txt"
        config.log = os.path.join(log_dir.abspath, f"events.{attempt_id}.log")  # HTCondor's event log

        content = config.custom_content
        content.append(("getenv", "false"))
        content.append(("environment", condor_environment(self.job_environment("htcondor"))))
        content.append(("batch_name", self.htcondor_batch_name or f"{self.task_family}_{self.version}"))
        content.append(("request_cpus", int(self.htcondor_cpus)))
        content.append(("request_memory", int(round(self.htcondor_memory))))
        venv_in_job = not (self.job_environment("htcondor").get("TAGGERFLOW_VENV") or
                           _cfg("taggerflow_htcondor", "venv_dir", ""))
        disk = int(_cfg("taggerflow_htcondor", "disk", 0)) or job_disk_mb(self.htcondor_shared_fs, venv_in_job)
        content.append(("request_disk", f"{disk}M"))
        runtime_s = int(round(self.htcondor_runtime * 3600))
        # HTCondor's own limit holds a job that runs longer; the flavours add their site's request
        content.append(("allowed_execute_duration", runtime_s))
        if self.htcondor_flavor == "cern":
            content.append(("+MaxRuntime", runtime_s))
        elif self.htcondor_flavor == "naf":
            content.append(("+RequestRuntime", runtime_s))
        if self.htcondor_gpus > 0:
            content.append(("request_gpus", int(self.htcondor_gpus)))
            if self.htcondor_gpu_memory > 0:
                content.append(("gpus_minimum_memory", int(round(self.htcondor_gpu_memory))))
        if self.htcondor_accounting_group:
            content.append(("accounting_group", self.htcondor_accounting_group))
        if self.htcondor_requirements:
            content.append(("requirements", self.htcondor_requirements))
        return config

    def htcondor_destination_info(self, info):
        info = super().htcondor_destination_info(info)
        # shown with every status line: a job that stays idle may ask for GPUs the pool does not have
        if self.htcondor_gpus > 0:
            mem = f" >= {int(self.htcondor_gpu_memory)} MB" if self.htcondor_gpu_memory > 0 else ""
            info["gpus"] = f"gpus: {self.htcondor_gpus}{mem}"
        return info


class TaggerflowSlurmJobManager(law.slurm.SlurmJobManager):
    """law's Slurm job manager; with ``[taggerflow_slurm] accounting: False`` jobs are followed with
    ``squeue --states=all`` (finished jobs stay listed for MinJobAge) instead of ``sacct``, and a failed
    job's state and reason (CANCELLED, TIMEOUT, OUT_OF_MEMORY, ...) become its error message."""

    accounting = _cfg_bool("taggerflow_slurm", "accounting", True)
    squeue_all_format = "JobID:30,State:30,exit_code:12,Reason:300"
    transient_states = ("COMPLETING", "STAGE_OUT", "SIGNALING")

    def query(self, job_id, partition=None, silent=False, _processes=None):
        if self.accounting:
            return super().query(job_id, partition=partition, silent=silent, _processes=_processes)
        chunking = isinstance(job_id, (list, tuple))
        job_ids = list(job_id) if chunking else [job_id]
        cmd = shlex.split(law.config.get_expanded("job", "slurm_cmd_squeue")) + [
            "--states=all", "--noheader", "--Format", self.squeue_all_format, "--jobs", ",".join(map(str, job_ids))]
        if partition or self.partition:
            cmd += ["--partition", partition or self.partition]
        code, out, err = interruptable_popen(quote_cmd(cmd), shell=True, executable="/bin/bash", stdout=subprocess.PIPE,
                                             stderr=subprocess.PIPE, kill_timeout=2, processes=_processes)
        if code != 0 and "invalid job id" not in err.lower():
            if silent:
                return None
            raise Exception(f"queue query of slurm job(s) '{job_id}' failed with code {code}:\n{err}")
        data = self.parse_squeue_all_output(out) if code == 0 else {}
        for i in job_ids:
            if i not in data:
                data[i] = self.job_status_dict(job_id=i, status=self.FAILED,
                                               error="job not known to squeue (finished longer than MinJobAge "
                                                     "ago, and no accounting)")
        return data if chunking else data[job_id]

    @classmethod
    def parse_squeue_all_output(cls, out: str) -> dict:
        data = {}
        for line in out.strip().splitlines():
            parts = line.split(None, 3)
            if len(parts) < 2 or not parts[0].isdigit():
                continue
            job_id, state = int(parts[0]), parts[1]
            exit_code = parts[2].split(":")[0] if len(parts) > 2 else ""
            reason = parts[3].strip() if len(parts) > 3 else ""
            status = cls.map_status(state)
            if state in cls.transient_states:
                # still ending (a cancelled job passes through COMPLETING with its signal's exit code):
                # its final state (CANCELLED, FAILED, TIMEOUT ...) is what the next poll reports
                data[job_id] = cls.job_status_dict(job_id=job_id, status=cls.RUNNING)
                continue
            code = int(exit_code) if exit_code.isdigit() else None
            if code is not None and code > 255:
                code >>= 8  # squeue prints the wait status (exit code 60: 15360), sacct "60:0"
            error = None
            if status == cls.FAILED or (code or 0) != 0:
                status = cls.FAILED
                error = state + (f" ({reason})" if reason and reason != "None" else "")
            data[job_id] = cls.job_status_dict(job_id=job_id, status=status, code=code, error=error)
        return data


class TaggerflowSlurmProxy(_JobErrorsMixin, _LawSlurmProxy):

    def get_extra_submission_data(self, job_file, job_id, config, log=None):
        # the job's log is its stdout file, named by the job id (one per attempt)
        extra = super().get_extra_submission_data(job_file, job_id, config, log=log)
        if config.stdout and job_id is not None:
            extra["log"] = str(config.stdout).replace("%j", str(job_id))
        if config.stderr and job_id is not None:  # the task's traceback is there (workflows.joblog)
            extra["stderr"] = str(config.stderr).replace("%j", str(job_id))
        return extra


class SlurmWorkflow(_BatchMixin, law.slurm.SlurmWorkflow):
    workflow_proxy_cls = TaggerflowSlurmProxy

    slurm_runtime = law.DurationParameter(default=float(_cfg("taggerflow_slurm", "runtime", 2.0)),
                                          unit="h", significant=False,
                                          description="walltime per job; default unit hours; default: 2h")
    slurm_memory = law.BytesParameter(default=float(_cfg("taggerflow_slurm", "memory", 2000)), unit="MB",
                                      significant=False, description="memory per job; default unit MB")
    slurm_partition = luigi.Parameter(default=_cfg("taggerflow_slurm", "partition", ""), significant=False,
                                      description="partition; default: the cluster's")
    slurm_cpus = luigi.IntParameter(default=int(_cfg("taggerflow_slurm", "cpus", 1)), significant=False,
                                    description="CPUs per job; default: 1")
    slurm_gpus = luigi.IntParameter(default=int(_cfg("taggerflow_slurm", "gpus", 0)), significant=False,
                                    description="GPUs per job; default: 0")
    slurm_gpu_memory = law.BytesParameter(default=float(_cfg("taggerflow_slurm", "gpu_memory", 0)), unit="MB",
                                          significant=False, description="memory per GPU (--mem-per-gpu); "
                                          "default unit MB; 0: the cluster's default")
    slurm_account = luigi.Parameter(default=_cfg("taggerflow_slurm", "account", ""), significant=False,
                                    description="account the jobs are charged to (--account); default: the user's")
    slurm_shared_fs = luigi.BoolParameter(default=_cfg_bool("taggerflow_slurm", "shared_fs", True),
                                          parsing=luigi.BoolParameter.EXPLICIT_PARSING, significant=False,
                                          description="nodes see the checkout and its environment; default: True")

    _slurm_resources = {"slurm_runtime", "slurm_memory", "slurm_cpus", "slurm_gpus", "slurm_gpu_memory"}
    exclude_params_branch = _slurm_resources | {"slurm_partition", "slurm_shared_fs", "slurm_account"}
    exclude_params_req = set(_slurm_resources)

    def slurm_output_directory(self):
        return self._job_dir("slurm")

    def slurm_output_postfix(self):
        # per resource request, as for HTCondor
        return self._resources_key(self._slurm_resources | {"slurm_partition", "slurm_account", "slurm_shared_fs"})

    def slurm_log_directory(self):
        return self._log_dir("slurm")

    def slurm_bootstrap_file(self):
        return self._bootstrap()

    def slurm_job_manager_cls(self):
        return TaggerflowSlurmJobManager

    def slurm_workflow_requires(self):
        reqs = super().slurm_workflow_requires()
        if not self.slurm_shared_fs:
            reqs["bundle"] = self._bundle()
        return reqs

    def slurm_cmdline_args(self):
        return self._job_cmdline_args("slurm")

    def slurm_job_config(self, config, job_num, branches):
        self._prepare(config, "slurm")
        config.arguments = self._own_job_arguments(config.arguments)
        # one log per attempt, named by the Slurm job id
        config.stdout = "stdout.%j.txt"
        config.stderr = "stderr.%j.txt"
        content = config.custom_content
        minutes = max(1, int(round(self.slurm_runtime * 60)))
        content.append(("time", f"{minutes // 60:02d}:{minutes % 60:02d}:00"))
        content.append(("mem", f"{int(round(self.slurm_memory))}M"))
        content.append(("cpus-per-task", int(self.slurm_cpus)))
        if self.slurm_partition:
            config.partition = self.slurm_partition
        if self.slurm_gpus > 0:
            content.append(("gres", f"gpu:{self.slurm_gpus}"))
            if self.slurm_gpu_memory > 0:
                content.append(("mem-per-gpu", f"{int(round(self.slurm_gpu_memory))}M"))
        if self.slurm_account:
            content.append(("account", self.slurm_account))
        # a bare environment, like HTCondor's, plus what the job needs
        env = ",".join(f"{k}={v}" for k, v in self.job_environment("slurm").items())
        content.append(("export", f"NONE,{env}"))
        return config


# attributes law's proxy task forwards to the workflow (or sandbox) proxy; all others are plain
_PROXIED = law.task.proxy._forward_workflow_attributes | law.task.proxy._forward_sandbox_attributes | \
    {"_proxy_attribute_task_init"}
_proxy_getattribute = law.task.proxy.ProxyAttributeTask.__getattribute__


class Workflow(Task, law.LocalWorkflow, HTCondorWorkflow, SlurmWorkflow):
    """A taggerflow workflow: local by default, --workflow htcondor or slurm to submit jobs."""

    # the outputs of all branches are checked with one directory listing per output directory
    output_collection_cls = ListedFileCollection

    exclude_index = True

    @classmethod
    def req_different_branching(cls, inst, **kwargs):
        # law drops every batch option between workflows of different branching (its
        # exclude_params_branch); the shared ones (--workflow, --poll-interval, --retries, ...) are
        # given once for the whole DAG and passed on (workflows.stages)
        branching = cls.__dict__.get("_taggerflow_branching_exclude")
        if branching is None:
            from workflows.stages import SHARED_OPTIONS

            branching = cls._taggerflow_branching_exclude = frozenset(cls.exclude_params_branch - SHARED_OPTIONS)
        exclude = set(law.util.make_list(kwargs.pop("_exclude", None) or [])) | branching
        return cls.req(inst, _exclude=exclude, **kwargs)

    @classmethod
    def req(cls, inst, **kwargs):
        task = super().req(inst, **kwargs)
        # wf.req(wf, branch=b) is what law's req_branch does: the branch knows its workflow, instead of
        # creating it again on its first branch_map access (10,000 times for 10,000 branches)
        if (type(inst) is cls and set(kwargs) <= {"branch"} and task is not inst
                and inst.is_workflow() and task.is_branch() and task._workflow_task is None):
            task._workflow_task = inst
        return task

    def __getattribute__(self, attr):
        # law routes every attribute access of a workflow task through its proxy lookup (several
        # hundred per task instance, a third of the cost of a branch task); only the attributes it
        # forwards take that path, the others go straight to the default lookup, as law does for them
        if attr in _PROXIED:
            return _proxy_getattribute(self, attr)
        return object.__getattribute__(self, attr)


def job_files(task, kind: str = "htcondor", job_nums=None) -> list[dict]:
    """Create the submission files of the workflow ``task`` with law's own machinery (the workflow
    proxy's ``create_job_file``, grouped as law submits), without submitting anything. Returns law's
    result per submission (``{"job": path, "config": ..., "log": ...}``). Must run inside a luigi
    command-line context (law's job arguments repeat the global command-line arguments)."""
    from law.job.dashboard import NoJobDashboard

    task = task.as_workflow()
    proxy = task.workflow_proxy
    if proxy.workflow_type != kind:
        raise ValueError(f"{task.task_id}: --workflow is {proxy.workflow_type}, not {kind}")
    proxy.job_file_factory = proxy.create_job_file_factory()
    proxy.dashboard = proxy.dashboard or task.create_job_dashboard() or NoJobDashboard()
    chunks = list(iter_chunks(sorted(task.branch_map), task.tasks_per_job))
    jobs = OrderedDict((i + 1, branches) for i, branches in enumerate(chunks))
    if job_nums is not None:
        jobs = OrderedDict((n, jobs[n]) for n in job_nums)
    if proxy.job_manager.job_grouping_submit:
        return [proxy.create_job_file(jobs)]
    return [proxy.create_job_file(n, b) for n, b in jobs.items()]
