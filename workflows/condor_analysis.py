"""The negotiator's own analysis of an idle HTCondor job (``condor_q -better-analyze <id>``), in plain words.

What ``condor_q -better-analyze`` prints (HTCondor 8.x to 24.x), the parts used here::

    Job 12635168.000 defines the following attributes:

        RequestDisk = 10240 (kb)
        RequestGPUs = 1

    The Requirements expression for job 12635168.000 reduces to these conditions:

            Slots
    Step   Matched  Condition
    ----- --------- ---------
    [0]        9251  TARGET.Arch == "X86_64"
    [5]        9241  TARGET.Disk >= RequestDisk
    [7]           0  TARGET.GPUs >= RequestGPUs

    12635168.000:  Run analysis summary ignoring user priority.  Of 9252 slots on 3328 machines,
       9252 slots are rejected by your job's requirements
          0 slots reject your job because of their own requirements
          0 slots match and are willing to run your job

(older versions: ``Of 710 machines,`` / ``710 are rejected by your job's requirements`` / ``0 are able
to run your job``; before 8.8 ``The Requirements expression for your job reduces ...`` without the job id).
HTCondor 24 also prints, per condition, ``always`` / ``never`` (``now`` / ``not now``) for a constant
clause instead of a count, and, where the pool has partitionable slots it could drain, a second count
column ``If Drained`` (headers ``Slots      If`` / ``Matched   Drained``); both are read here (the
format strings of condor_q's analysis code in HTCondor's source: doJobMatchAnalysisToBuffer,
appendJobMatchTotalsToBuffer, DrainedAnalysisMatchDescriminator).
A job that every slot rejects by the job's own requirements can never match; the conditions no slot
satisfies (drained or not) say why.
"""

from __future__ import annotations

import re

_REDUCES = re.compile(r"^\s*The Requirements expression for job (\d+)\.(\d+) reduces to these conditions:", re.M)
_DEFINES = re.compile(r"^\s*Job (\d+)\.(\d+) defines the following attributes:", re.M)
# before HTCondor 8.8 the analysis of a single job names it only in its summary line
_REDUCES_ANY = re.compile(r"^\s*The Requirements expression for (?:job \d+\.\d+|your job) reduces to these "
                          r"conditions:", re.M)
_DEFINES_ANY = re.compile(r"^\s*(?:Job \d+\.\d+|Your job) defines the following attributes:", re.M)
_SUMMARY = re.compile(r"^\s*(\d+)\.(\d+):\s+Run analysis summary[^\n]*?Of (\d+) (?:slots|machines)", re.M)
# a count, or the value of a constant clause (HTCondor prints "always"/"never", "now"/"not now")
_COUNT = r"(\d+|always|never|not now|now)"
_STEP = re.compile(r"^\s*\[(\d+)\]\s+" + _COUNT + r"\s+(.+?)\s*$")
_STEP_DRAINED = re.compile(r"^\s*\[(\d+)\]\s+" + _COUNT + r"\s+(\d+)\s+(.+?)\s*$")
_CONSTANT = {"always": None, "now": None, "never": 0, "not now": 0}  # None: not a restriction
_ATTR = re.compile(r"^\s+(\w+) = (.+?)\s*$")
_NAME = re.compile(r"(?<![\w.])(?:MY\.)?([A-Za-z_]\w*)")
_COUNTS = {
    "rejected_by_job": re.compile(r"^\s*(\d+) (?:slots |machines )?(?:are )?rejected by your job's requirements", re.M),
    "rejected_by_slot": re.compile(r"^\s*(\d+) (?:slots |machines )?reject your job because of their own requirements",
                                   re.M),
    "willing": re.compile(r"^\s*(\d+) (?:slots |machines )?(?:match and are willing to run your job|are able to "
                          r"run your job|are available to run your job)", re.M),
    "running_yours": re.compile(r"^\s*(\d+) (?:slots |machines )?match and are already running (?:one of )?your jobs", re.M),
    "other_users": re.compile(r"^\s*(\d+) (?:slots |machines )?match but are serving (?:other users|users with a "
                             r"better priority)", re.M),
    "if_drained": re.compile(r"^\s*(\d+) (?:slots )?would match if drained", re.M),
}

# what a condition no slot satisfies means, by the request attribute it names
_PLAIN = (
    # countMatches(MY.RequireGPUs, TARGET.AvailableGPUs) >= RequestGPUs: condor_submit's clause once the
    # GPUs are constrained (gpus_minimum_memory, which --htcondor-gpu-memory sets; require_gpus)
    ("RequireGPUs", "GPU(s) with the required properties", "--htcondor-gpus / --htcondor-gpu-memory"),
    ("RequestGPUs", "GPU(s)", "--htcondor-gpus"),
    ("GPUs_", "GPU(s) of that kind", "--htcondor-gpus / --htcondor-gpu-memory"),
    ("GlobalMemoryMb", "GPU memory", "--htcondor-gpu-memory"),
    ("RequestMemory", "memory", "--htcondor-memory"),
    ("RequestCpus", "CPUs", "--htcondor-cpus"),
    ("RequestDisk", "disk", "request_disk"),
)


def _job_id(cluster: str, proc: str) -> str:
    return f"{int(cluster)}.{int(proc)}"


def _table(block: str, start: int) -> list[tuple[int, int | None, str]]:
    """The rows of the conditions table after ``start``: (step, matched slots (undrained + drained);
    None for a clause that is always true, condition)."""
    rows: list = []
    two_columns = False
    for line in block[start:].splitlines():
        if "Drained" in line and not rows:
            two_columns = True  # HTCondor 24: "Matched   Drained"
            continue
        # a constant clause has one value in either layout
        s = (two_columns and _STEP_DRAINED.match(line)) or _STEP.match(line)
        if s:
            count = s.group(2)
            matched = _CONSTANT[count] if count in _CONSTANT else int(count)
            if s.re is _STEP_DRAINED and matched is not None:
                matched += int(s.group(3))
            rows.append((int(s.group(1)), matched, s.group(s.lastindex)))
        elif rows and line.strip():
            break
    return rows


def _parse_block(block: str, defines, reduces) -> dict:
    info: dict = {"attributes": {}, "conditions": [], "slots": None}
    m = defines.search(block)
    if m:
        for line in block[m.end():].splitlines()[1:]:
            a = _ATTR.match(line)
            if not a:
                if line.strip():
                    break
                continue
            info["attributes"][a.group(1)] = a.group(2)
    m = reduces.search(block)
    if m:
        info["conditions"] = _table(block, m.end())
    m = _SUMMARY.search(block)
    if m:
        info["slots"] = int(m.group(3))
        tail = block[m.end():]
        for key, rx in _COUNTS.items():
            c = rx.search(tail)
            if c:
                info[key] = int(c.group(1))
    return info


def parse_better_analyze(text: str) -> dict[str, dict]:
    """Per job id ("123.0"): ``attributes`` (the job's referenced attributes), ``conditions`` ([(step,
    matched slots, condition)]), ``slots`` (the total) and the summary counts (``rejected_by_job``,
    ``rejected_by_slot``, ``willing``, ...; those printed)."""
    # the output of several jobs is split at each job's first line of its own
    starts = sorted({(m.start(), _job_id(m.group(1), m.group(2))) for rx in (_DEFINES, _REDUCES)
                     for m in rx.finditer(text)})
    if not starts:
        # before HTCondor 8.8: one job's analysis, named only by its summary line
        m = _SUMMARY.search(text)
        if m is None or len(_SUMMARY.findall(text)) != 1:
            return {}
        return {_job_id(m.group(1), m.group(2)): _parse_block(text, _DEFINES_ANY, _REDUCES_ANY)}
    firsts: dict[str, int] = {}
    for pos, jid in starts:
        firsts.setdefault(jid, pos)
    order = sorted(firsts.items(), key=lambda kv: kv[1])
    out: dict[str, dict] = {}
    for i, (jid, pos) in enumerate(order):
        end = order[i + 1][1] if i + 1 < len(order) else len(text)
        out[jid] = _parse_block(text[pos:end], _DEFINES, _REDUCES)
    return out


def _unmatched(info: dict) -> list[str]:
    """The simple conditions no slot satisfies (combinations such as ``[0] && [1]`` left out)."""
    return [cond for _, matched, cond in info["conditions"] if matched == 0 and not re.search(r"\[\d+\]", cond)]


def _job_values(cond: str, attributes: dict) -> str:
    """``Name = value`` of the job's own attributes a condition names (``TARGET.`` ones are the slot's)."""
    lower = {k.lower(): (k, v) for k, v in attributes.items()}
    seen = dict.fromkeys(n.lower() for n in _NAME.findall(cond))
    return ", ".join(f"{lower[n][0]} = {lower[n][1]}" for n in seen if n in lower)


def plain_message(info: dict) -> str | None:
    """What the analysis means for the user, in one line (None when it says nothing useful)."""
    slots = info.get("slots")
    if not slots:
        return "can never match: the pool has no slots" if slots == 0 else None
    unmatched = _unmatched(info)
    if info.get("rejected_by_job") == slots:
        whats, options = [], []
        for cond in unmatched:
            for key, what, option in _PLAIN:
                if key.lower() in cond.lower():
                    values = _job_values(cond, info["attributes"])
                    whats.append(f"{what}{f' ({values})' if values else ''}")
                    options.append(option)
                    break
            else:
                whats.append(f"'{cond}'")
        reason = f"no slot offers the requested {', '.join(whats)}" if whats else "every slot is rejected by the job's requirements"
        hint = f" -- lower {' / '.join(dict.fromkeys(options))} or use a pool that has it" if options else ""
        cond_text = f" [{'; '.join(unmatched)}: 0 of {slots} slots]" if unmatched else f" [0 of {slots} slots]"
        return f"can never match: {reason}{cond_text}{hint}"
    if info.get("rejected_by_slot") == slots:
        return f"can never match as it is: all {slots} slots refuse the job by their own requirements (START policy)"
    willing = sum(info.get(k) or 0 for k in ("willing", "running_yours", "other_users", "if_drained"))
    if willing:
        return f"{willing} of {slots} slots could run it: waiting for a free slot (user priority)"
    return None
