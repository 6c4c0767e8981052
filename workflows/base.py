"""The base task: version, configuration, and where outputs go.

Outputs live under ``$TAGGERFLOW_DATA/<TaskFamily>/<version>/<config name>_<hash>/``, where the
hash covers the configuration sections the task (and everything upstream) depends on: a changed
configuration never overwrites, an unchanged one is never recomputed.
"""

from __future__ import annotations

import os
from functools import cached_property

import law
import luigi

from taggerflow.config import Config, load_config

BASE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_CONFIG = os.path.join(BASE_DIR, "configs", "default.yaml")


def data_dir() -> str:
    return os.path.expandvars(os.path.expanduser(
        os.environ.get("TAGGERFLOW_DATA", os.path.join(BASE_DIR, "data"))))


class Task(law.Task):
    """Base of every taggerflow task."""

    version = luigi.Parameter(description="output version; a new version never touches old outputs")
    config = luigi.Parameter(default=DEFAULT_CONFIG, description="configuration YAML file; "
                             "default: configs/default.yaml")

    # configuration sections the outputs depend on, including those of upstream tasks
    config_sections: tuple[str, ...] = ()

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # validate the configuration before anything is scheduled or submitted
        self.cfg  # noqa: B018

    @cached_property
    def cfg(self) -> Config:
        path = self.config if os.path.isabs(self.config) else os.path.abspath(self.config)
        return load_config(path)

    def store_parts(self) -> tuple[str, ...]:
        tag = f"{self.cfg.name}_{self.cfg.sections_hash(('name', 'seed') + self.config_sections)}"
        return (self.task_family, str(self.version), tag)

    def local_path(self, *parts: str) -> str:
        return os.path.join(data_dir(), *self.store_parts(), *[str(p) for p in parts])

    def local_target(self, *parts: str, dir: bool = False):
        cls = law.LocalDirectoryTarget if dir else law.LocalFileTarget
        return cls(self.local_path(*parts))
