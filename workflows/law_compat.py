"""Every use of law's and luigi's internals, in one place, for the versions it was tested with.

A workflow of 10,000 branches creates 10,000 task instances; three of law's and luigi's generic
steps cost most of that time, and are replaced here by equivalents that give the same result in
taggerflow's use (tests/test_law_compat.py compares them with law's and luigi's own on the
project's task classes, and checks that the private names used here still exist as called):

- parameter values not given (batch options, law's interactive parameters) are resolved by luigi
  through the command line and two configuration lookups, twice per instance:
  :func:`param_values` resolves each once per task class and command-line context;
- law's ``req_params`` matches every parameter name against every exclusion with fnmatch:
  :func:`req_params` removes exact names by set lookup and leaves only real patterns to law;
- law routes every attribute access of a workflow through its proxy lookup
  (``law.task.proxy.get_proxy_attribute``): :func:`workflow_getattribute` sends only the
  attributes law forwards (its private ``_forward_*`` sets) that way.

law's version is checked at import against the range tested (``SUPPORTED``): another version ends
the import with one line naming both. ``TAGGERFLOW_ALLOW_UNTESTED_LAW=1`` lets a newer law (or luigi)
be tried: a warning instead, and tests/test_law_compat.py says whether the shortcuts still hold.
"""

from __future__ import annotations

import functools
import importlib.metadata
import os
import re
import sys

import law
import law.task.proxy
import luigi
from law.util import merge_dicts

#: (lowest tested, first untested) version per package; keep in step with pyproject.toml
SUPPORTED = {"law": ((0, 1, 21), (0, 1, 22)), "luigi": ((3, 8, 1), (3, 9))}
OVERRIDE_ENV = "TAGGERFLOW_ALLOW_UNTESTED_LAW"


class UnsupportedVersionError(RuntimeError):
    pass


def _version_tuple(text: str) -> tuple[int, ...]:
    """The leading release numbers of a version string ("0.1.22.dev1" -> (0, 1, 22))."""
    return tuple(int(part) for part in re.findall(r"\d+", re.match(r"[\d.]*", text).group(0)))


def _range_text(name: str) -> str:
    low, high = SUPPORTED[name]
    return f"{name}>={'.'.join(map(str, low))},<{'.'.join(map(str, high))}"


def check_versions(versions: dict[str, str], allow_untested: bool = False) -> list[str]:
    """The packages of ``versions`` (name -> installed version) outside the tested range, as
    messages; raises :class:`UnsupportedVersionError` with them unless ``allow_untested``."""
    problems = []
    for name, installed in versions.items():
        low, high = SUPPORTED[name]
        if not low <= _version_tuple(installed) < high:
            problems.append(f"{name} {installed} installed, taggerflow is tested with {_range_text(name)}")
    if problems and not allow_untested:
        raise UnsupportedVersionError("; ".join(problems) + f" (set {OVERRIDE_ENV}=1 to try it anyway)")
    return problems


def installed_versions() -> dict[str, str]:
    return {"law": law.__version__, "luigi": importlib.metadata.version("luigi")}


def _check_at_import() -> None:
    allow = os.environ.get(OVERRIDE_ENV, "").strip().lower() in ("1", "true", "yes", "on")
    for problem in check_versions(installed_versions(), allow_untested=allow):
        print(f"taggerflow: warning: {problem} ({OVERRIDE_ENV} is set)", file=sys.stderr)


_check_at_import()


# -- luigi: parameters ------------------------------------------------------------------------------

# parameter values resolved from the command line, luigi's configuration or the default, per task class
# and command-line context (the parser object is kept as key, so a new context never reuses them)
_PARAM_DEFAULTS: dict[tuple[type, object], dict[str, object]] = {}

# names of the parameters two task classes share (what req() copies), per pair of classes
_COMMON_PARAMS: dict[tuple[type, type], list[str]] = {}


def class_params(cls, owner) -> list:
    """``cls.get_params()``, collected once per class: luigi scans ``dir(cls)`` on every call, about
    ten times per task instance, but a class's parameters are fixed once it is defined. ``owner`` is
    the class whose ``get_params`` calls this (luigi's own is the one after it in ``cls``'s MRO)."""
    params = cls.__dict__.get("_taggerflow_params")
    if params is None:
        params = super(owner, cls).get_params()
        cls._taggerflow_params = params
    return list(params)


def param_values(cls, params, args, kwargs) -> dict:
    """``kwargs`` with the value of every parameter not given, as luigi's ``get_param_values``
    resolves it (command line, luigi's configuration, default: ``Parameter.task_value``), resolved
    once per task class within one command-line context (`law run`); outside of one, and with
    positional arguments, ``kwargs`` unchanged (luigi resolves them). A parameter without value
    is left out: luigi reports it missing."""
    parser = luigi.cmdline_parser.CmdlineParser.get_instance()
    if args or parser is None:
        return kwargs
    cache = _PARAM_DEFAULTS.setdefault((cls, parser), {})
    family = cls.get_task_family()
    filled = dict(kwargs)
    for name, param in params:
        if name in filled:
            continue
        if name not in cache:
            if not param.has_task_value(family, name):
                continue
            cache[name] = param.task_value(family, name)
        filled[name] = cache[name]
    return filled


def task_classes() -> dict[str, type]:
    """luigi's registered task classes by task family, without the ambiguous names (two classes of
    one family, which luigi's registry marks with a placeholder)."""
    registry = luigi.task_register.Register._get_reg()
    return {family: cls for family, cls in registry.items() if isinstance(cls, type)}


# -- law: req() ---------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=1024)
def _patterns(names: frozenset) -> frozenset:
    """The real patterns (negated, regular expressions, globs) among parameter exclusions."""
    return frozenset(p for p in names if p[:1] in ("!", "^") or any(c in p for c in "*?["))


def common_task_params(inst, cls) -> dict:
    """law.util.common_task_params, with the shared names computed once per pair of classes and the
    values read past law's attribute proxy (parameters are never forwarded by it)."""
    key = (type(inst), cls)
    names = _COMMON_PARAMS.get(key)
    if names is None:
        cls_names = {name for name, _ in cls.get_params()}
        names = _COMMON_PARAMS[key] = [name for name, _ in inst.get_params() if name in cls_names]
    get = object.__getattribute__
    return {name: get(inst, name) for name in names}


def req_params(cls, inst, _exclude=None, _prefer_cli=None, _skip_task_excludes=False,
               _skip_task_excludes_get=None, _skip_task_excludes_set=None, **kwargs):
    """law.Task.req_params (law's exclusions first, then ``kwargs``) with exact names excluded by set
    lookup; None where law's own must run (parameters preferred from the command line)."""
    prefer_cli = cls.prefer_params_cli if _prefer_cli is None else _prefer_cli
    if prefer_cli:
        return None
    exclude = set() if _exclude is None else set(law.util.make_list(_exclude))
    if not (_skip_task_excludes if _skip_task_excludes_get is None else _skip_task_excludes_get):
        exclude |= cls.exclude_params_req | cls.exclude_params_req_get
    if not (_skip_task_excludes if _skip_task_excludes_set is None else _skip_task_excludes_set):
        exclude |= set(getattr(inst, "exclude_params_req", ())) | set(getattr(inst, "exclude_params_req_set", ()))
    exclude |= set(getattr(inst, "interactive_params", ()))
    patterns = _patterns(frozenset(exclude))
    if patterns:
        # past law.Task.req_params, which only adds the interactive parameters (excluded above); a
        # set, as law's make_list wraps a frozenset whole
        params = super(law.Task, cls).req_params(inst, _exclude=set(patterns), _skip_task_excludes=True)
    else:
        params = common_task_params(inst, cls)
    for name in exclude - patterns:
        params.pop(name, None)
    params.update(kwargs)
    return params


# -- law: workflows and their proxies ---------------------------------------------------------------

# attributes law's proxy task forwards to the workflow (or sandbox) proxy; all others are plain
PROXIED_ATTRIBUTES = frozenset(law.task.proxy._forward_workflow_attributes | law.task.proxy._forward_sandbox_attributes
                               | {"_proxy_attribute_task_init"})
_proxy_getattribute = law.task.proxy.ProxyAttributeTask.__getattribute__


def workflow_getattribute(self, attr):
    """A workflow task's ``__getattribute__``: law routes every attribute access through its proxy
    lookup (several hundred per task instance, a third of the cost of a branch task); only the
    attributes it forwards take that path, the others go straight to the default lookup, as law
    does for them."""
    if attr in PROXIED_ATTRIBUTES:
        return _proxy_getattribute(self, attr)
    return object.__getattribute__(self, attr)


def adopt_branch(workflow, branch) -> None:
    """Let ``branch`` (a branch task of ``workflow``) know its workflow, as law's ``req_branch``
    does, instead of creating the workflow again on its first ``branch_map`` access."""
    if branch._workflow_task is None:
        branch._workflow_task = workflow


def job_manager_kwargs(proxy, action: str | None = None, **extra) -> dict:
    """The keyword arguments law's remote workflow proxy gives its job manager (pool, scheduler,
    ...), with those of ``action`` ("submit", "cancel", "query", ...) and ``extra``."""
    kwargs = proxy._setup_job_manager()
    if action is not None:
        kwargs = merge_dicts(kwargs, proxy._get_job_kwargs(action))
    return merge_dicts(kwargs, extra) if extra else kwargs
