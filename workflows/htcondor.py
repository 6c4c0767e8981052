"""The HTCondor workflow: law's, with taggerflow's jobs (workflows.batch), a job manager that tells
why a job waits or was held, and a proxy that removes from the queue what law gave up on."""

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
from law.util import interruptable_popen, quote_cmd

from workflows.batch import BatchMixin, JobErrorsMixin, cfg_flag, cfg_option
from workflows.bundle import job_disk_mb
from workflows.law_compat import job_manager_kwargs

law.contrib.load("htcondor")


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


class TaggerflowHTCondorProxy(JobErrorsMixin, _LawHTCondorProxy):
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
        kwargs = job_manager_kwargs(self, "cancel", silent=True)
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
            kwargs = job_manager_kwargs(self)
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


class HTCondorWorkflow(BatchMixin, law.htcondor.HTCondorWorkflow):
    workflow_proxy_cls = TaggerflowHTCondorProxy

    htcondor_runtime = law.DurationParameter(default=float(cfg_option("taggerflow_htcondor", "runtime", 2.0)),
                                             unit="h", significant=False,
                                             description="maximum runtime per job (a longer job is held); "
                                             "default unit hours; default: law.cfg, 2h")
    htcondor_memory = law.BytesParameter(default=float(cfg_option("taggerflow_htcondor", "memory", 2000)),
                                         unit="MB", significant=False,
                                         description="requested memory per job; default unit MB; default: 2000MB")
    htcondor_cpus = luigi.IntParameter(default=int(cfg_option("taggerflow_htcondor", "cpus", 1)), significant=False,
                                       description="CPUs per job; default: 1")
    htcondor_gpus = luigi.IntParameter(default=int(cfg_option("taggerflow_htcondor", "gpus", 0)), significant=False,
                                       description="GPUs per job; default: 0")
    htcondor_gpu_memory = law.BytesParameter(default=float(cfg_option("taggerflow_htcondor", "gpu_memory", 0)),
                                             unit="MB", significant=False,
                                             description="minimum memory of the GPU(s); default unit MB; 0: any")
    htcondor_flavor = luigi.ChoiceParameter(default=cfg_option("taggerflow_htcondor", "flavor", "default"),
                                            choices=("default", "cern", "naf"), significant=False,
                                            description="site conventions for the runtime request: cern "
                                            "(+MaxRuntime), naf (+RequestRuntime); default: law.cfg")
    htcondor_accounting_group = luigi.Parameter(default=cfg_option("taggerflow_htcondor", "accounting_group", ""),
                                                significant=False, description="accounting group; default: none")
    htcondor_requirements = luigi.Parameter(default=cfg_option("taggerflow_htcondor", "requirements", ""),
                                            significant=False, description="extra requirements expression")
    htcondor_batch_name = luigi.Parameter(default="", significant=False,
                                          description="batch name shown by condor_q; default: <Task>_<version>")
    htcondor_shared_fs = luigi.BoolParameter(default=cfg_flag("taggerflow_htcondor", "shared_fs", True),
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
                           cfg_option("taggerflow_htcondor", "venv_dir", ""))
        disk = int(cfg_option("taggerflow_htcondor", "disk", 0)) or job_disk_mb(self.htcondor_shared_fs, venv_in_job)
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
