"""What a failed batch job's log says: the job's real error instead of law's generic exit-code text.

law's job script (law_job.sh) writes sections (``-- bootstrap --``, ``-- dependency tree --``, ``-- task
--`` ... ``-- end --``) and ends with ``job exit code : <n>``. The error of a failed job is in the
section that failed, before law's ``law_hook_job_failed`` hook: a Python exception (the last line of
its traceback), argparse's ``error:`` line, and law's ``... failed (exit code n), stop job``.
"""

from __future__ import annotations

import os
import re

_FAILED_HOOK = re.compile(r"^-- hook law_hook_job_failed", re.M)
_SECTION_END = re.compile(r"^-- (stageout|cleanup|end) -+$", re.M)
_USAGE = re.compile(r"^\s+\[|^usage: |^\s*\[Required root task\]")
_LAW_STOP = re.compile(r"failed \(exit code \d+\), stop job")
_EXCEPTION = re.compile(r"^([A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt|Failure)|error)\b.*|^[\w .]*: error: .*")


def error_excerpt(text: str, max_lines: int = 6) -> str:
    """The lines of a law job log that say why the job failed ('' if none)."""
    m = _FAILED_HOOK.search(text) or _SECTION_END.search(text)
    body = text[:m.start()] if m else text
    lines = [line.rstrip() for line in body.splitlines() if line.strip() and not _USAGE.match(line)]
    picked: list[str] = []
    # the exception that ended the task: the first unindented line after the last traceback
    tb = max((i for i, line in enumerate(lines) if line.startswith("Traceback (most recent call last)")), default=None)
    if tb is not None:
        for line in lines[tb + 1:]:
            if not line.startswith((" ", "\t")):
                picked.append(line.strip())
                break
    for line in lines:
        if _EXCEPTION.match(line.strip()) and line.strip() not in picked:
            picked.append(line.strip())
    stop = [line.strip() for line in lines if _LAW_STOP.search(line)]
    picked = picked[-max_lines + 1:] + stop[-1:] if stop else picked[-max_lines:]
    if not picked:
        picked = [line.strip() for line in lines[-max_lines:]]
    return "\n".join(picked)


def _read_tail(path, size: int = 200_000) -> str:
    if not path or not isinstance(path, str) or not os.path.isfile(path):
        return ""
    try:
        with open(path, errors="replace") as f:
            f.seek(max(0, os.path.getsize(path) - size))
            return f.read()
    except OSError:
        return ""


def log_error(*paths, max_lines: int = 6) -> str:
    """:func:`error_excerpt` of the log files ``paths`` (a job's log, and its stderr where that is a file
    of its own): the excerpt naming the most errors, the first on a tie ('' if there is no such file)."""
    best, best_score = "", -1
    for path in paths:
        text = _read_tail(path)
        if not text:
            continue
        excerpt = error_excerpt(text, max_lines=max_lines)
        score = sum(1 for line in excerpt.splitlines() if _EXCEPTION.match(line) or _LAW_STOP.search(line))
        if score > best_score:
            best, best_score = excerpt, score
    return best
