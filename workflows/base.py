"""The base task: version, configuration, and where outputs go.

Outputs live under ``$TAGGERFLOW_DATA/<TaskFamily>/<version>/<config name>_<hash>/``, where the
hash covers the configuration sections the task (and everything upstream) depends on: a changed
configuration never overwrites, an unchanged one is never recomputed. A task's ``run`` holds the
lock of its outputs (a hidden ``.lock-<branch>`` file beside them, see :func:`_locked_run`).
"""

from __future__ import annotations

import functools
import inspect
import os
from functools import cached_property

import law
import luigi

import taggerflow.paths
from taggerflow.config import Config, ConfigError, load_config
from taggerflow.utils import output_lock
from workflows import law_compat

BASE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_CONFIG = os.path.join(BASE_DIR, "configs", "default.yaml")

# validated configurations by (path, mtime, size): a workflow of 10,000 branches creates 10,000 task
# instances, and each must not parse and validate the YAML file again
_CONFIG_CACHE: dict[tuple[str, int, int], Config] = {}

# output directory tags per configuration object and sections
_TAGS: dict[tuple[int, tuple[str, ...]], tuple[Config, str]] = {}


def cached_config(path: str) -> Config:
    """The validated configuration at ``path``, parsed once per file version (one stat per call)."""
    try:
        st = os.stat(path)
    except OSError:
        return load_config(path)  # reports the missing file
    key = (path, st.st_mtime_ns, st.st_size)
    if key not in _CONFIG_CACHE:
        _CONFIG_CACHE[key] = load_config(path)
    return _CONFIG_CACHE[key]


def required_task_classes(cls) -> tuple[type, ...]:
    """The task classes that ``cls``'s requires() and workflow_requires() name, read from their code
    and from the code of the functions of tasks/ and workflows/ they call (``demo_requirement``):
    what a task requires is written once, in requires(). tests/test_config_sections.py checks it
    against the requirements of real task instances."""
    found: dict[type, None] = {}
    seen: set = set()

    def scan(func) -> None:
        code = getattr(func, "__code__", None)
        if code is None or code in seen:
            return
        seen.add(code)
        names = func.__globals__
        stack = [code]
        while stack:
            co = stack.pop()
            stack.extend(c for c in co.co_consts if inspect.iscode(c))   # comprehensions, lambdas
            for name in co.co_names:
                value = names.get(name)
                if isinstance(value, type) and issubclass(value, Task) and value is not cls:
                    found[value] = None
                elif inspect.isfunction(value) and value.__module__.split(".")[0] in ("tasks", "workflows"):
                    scan(value)

    for klass in cls.__mro__:
        for method in ("requires", "workflow_requires"):
            func = klass.__dict__.get(method)
            if func is not None and klass.__module__.split(".")[0] in ("tasks", "workflows"):
                scan(func)
    return tuple(found)


#: configuration sections added after outputs existed (taggerflow.control_sample's control)
OPTIONAL_SECTIONS = ("control",)

data_dir = taggerflow.paths.data_dir  # one definition: outputs go there and store paths relative to it


def _locked_run(run):
    """``run`` under the lock of the task's outputs: two runs of one task on the same outputs at once
    (two `law run`, a resubmitted job beside a live one) never write them together, and the later one,
    once it has the lock, finds them complete and does nothing. The temporary files of a killed
    attempt are removed by the next write of each output (taggerflow.utils.AtomicOutput); while the
    lock is held, also those of other hosts."""

    if inspect.isgeneratorfunction(run):   # law's dynamic dependencies
        @functools.wraps(run)
        def locked(self, *args, **kwargs):
            with output_lock(self.lock_path(), on_wait=self.publish_message):
                if not _done_meanwhile(self):
                    yield from run(self, *args, **kwargs)
    else:
        @functools.wraps(run)
        def locked(self, *args, **kwargs):
            with output_lock(self.lock_path(), on_wait=self.publish_message):
                if not _done_meanwhile(self):
                    return run(self, *args, **kwargs)
            return None

    locked._taggerflow_locked = True
    return locked


def _done_meanwhile(task) -> bool:
    """Whether a concurrent run completed the task's outputs while this one waited for the lock."""
    if not task.complete():
        return False
    task.publish_message(f"{task.task_id}: outputs were completed by a concurrent run, nothing to do")
    return True


class Task(law.Task):
    """Base of every taggerflow task."""

    version = luigi.Parameter(description="output version; a new version never touches old outputs")
    config = luigi.Parameter(default=DEFAULT_CONFIG, description="configuration YAML file; "
                             "default: configs/default.yaml")

    # the configuration sections this task's own outputs depend on; those of the tasks it requires
    # are added by all_config_sections()
    config_sections: tuple[str, ...] = ()

    @classmethod
    def all_config_sections(cls) -> tuple[str, ...]:
        """This task's sections and those of every task it requires, transitively (the task classes
        its requires()/workflow_requires() name: :func:`required_task_classes`)."""
        sections = cls.__dict__.get("_taggerflow_sections")
        if sections is None:
            out = dict.fromkeys(cls.config_sections)
            for up in required_task_classes(cls):
                out.update(dict.fromkeys(up.all_config_sections()))
            sections = cls._taggerflow_sections = tuple(out)
        return sections

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # validate the configuration before anything is scheduled or submitted; on the command line
        # (`law run`, also inside batch jobs) an error ends the command with its one line (file: key:
        # message) and a non-zero status instead of luigi's "Uncaught exception" traceback
        try:
            self.cfg  # noqa: B018
        except ConfigError as e:
            if luigi.cmdline_parser.CmdlineParser.get_instance() is not None:
                raise SystemExit(str(e)) from None
            raise

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        run = cls.__dict__.get("run")
        if run is not None and not getattr(run, "_taggerflow_locked", False):
            cls.run = _locked_run(run)

    def lock_path(self) -> str:
        """The lock file of this task's outputs (see :func:`_locked_run`): hidden, in its output
        directory, one per branch; never an output itself."""
        branch = getattr(self, "branch", -1)
        return self.local_path(".lock" if branch is None or branch < 0 else f".lock-{branch}")

    # luigi's and law's parameter handling, with the shortcuts that make a workflow of 10,000 branches
    # fast (workflows.law_compat: the same values, checked against law's and luigi's own in
    # tests/test_law_compat.py)
    @classmethod
    def get_params(cls):
        return law_compat.class_params(cls, Task)

    @classmethod
    def get_param_values(cls, params, args, kwargs):
        return super().get_param_values(params, args, law_compat.param_values(cls, params, args, kwargs))

    @classmethod
    def req_params(cls, inst, **kwargs):
        params = law_compat.req_params(cls, inst, **kwargs)
        return super().req_params(inst, **kwargs) if params is None else params

    @cached_property
    def cfg(self) -> Config:
        # variables are expanded so that a job can name a configuration relative to its own checkout
        path = os.path.abspath(os.path.expandvars(os.path.expanduser(str(self.config))))
        return cached_config(path)

    def store_parts(self) -> tuple[str, ...]:
        # an optional section is hashed only where the configuration has one: configurations
        # without keep the output paths they had before it existed
        cfg = self.cfg
        sections = ("name", "seed") + tuple(s for s in self.all_config_sections()
                                            if s not in OPTIONAL_SECTIONS or s in cfg.raw)
        key = (id(cfg), sections)
        if key not in _TAGS:
            _TAGS[key] = (cfg, f"{cfg.name}_{cfg.sections_hash(sections)}")  # keeps cfg (and its id) alive
        return (self.task_family, str(self.version), _TAGS[key][1])

    def local_path(self, *parts: str) -> str:
        return os.path.join(data_dir(), *self.store_parts(), *[str(p) for p in parts])

    def local_target(self, *parts: str, dir: bool = False):
        cls = law.LocalDirectoryTarget if dir else law.LocalFileTarget
        return cls(self.local_path(*parts))
