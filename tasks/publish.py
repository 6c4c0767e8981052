"""Publish: the deliverables of every training copied to an output store through law's targets.

The working outputs of the chain stay under ``$TAGGERFLOW_DATA`` (a local or shared filesystem the
jobs write to). What a user hands on (the lwtnn JSON, the ONNX file, the model card, the check, the
evaluation report) is copied to the store named by ``--store`` or ``[taggerflow] publish_store`` in
``law.cfg``: a section of law's file systems, local (``base: /eos/user/m/me/taggers``), XRootD
(``base: root://eosuser.cern.ch//eos/user/m/me/taggers``, through the XRootD python client of the
``xrootd`` wheel) or any other gfal2 URL (``davs://``, ``srm://``..., through law's ``wlcg`` targets;
needs gfal2 on the login node). The ``published.json`` manifest (sizes and sha256 of every file) is
written last: a store where it is missing is incomplete, and a rerun copies again.
"""

from __future__ import annotations

import os

import law
import luigi
from law.target.base import Target

from tasks.evaluation import EvaluationReport
from tasks.training import ConvertLwtnn
from taggerflow.xrootd_store import XRootDStore, is_xrootd_url
from workflows import WorkflowOptions

REMOTE_SCHEMES = ("root://", "davs://", "dav://", "https://", "gsiftp://", "srm://", "xroot://", "s3://")


def store_base(name: str) -> str:
    """The base of the section ``name`` of law.cfg. Raises with the section named when it does not
    exist or has no base."""
    if not law.config.has_section(name):
        raise ValueError(f"law.cfg: no section [{name}] for the publish store (add one with a 'base')")
    base = law.config.get_expanded(name, "base", None)
    if not base:
        raise ValueError(f"law.cfg: [{name}] base: the publish store needs a base directory or URL")
    return base


def store_file_system(name: str):
    """law's file system of the section ``name`` of law.cfg (not a root:// one, see XRootDFileTarget):
    local, or remote (wlcg) when its base is a URL."""
    base = store_base(name)
    if base.startswith(REMOTE_SCHEMES):
        law.contrib.load("wlcg")
        return law.wlcg.WLCGFileSystem(name)
    return law.LocalFileSystem(name)


def _is_remote(fs) -> bool:
    return not isinstance(fs, law.LocalFileSystem)


class XRootDFileTarget(Target):
    """A file of a root:// store, written through the XRootD python client (taggerflow.xrootd_store):
    just what Publish needs of a law target (existence for completeness, removal, its URL)."""

    def __init__(self, store: XRootDStore, path: str, **kwargs):
        super().__init__(**kwargs)
        self.store, self.path = store, path

    def _repr_pairs(self):
        return [("uri", self.uri())]

    def exists(self) -> bool:
        return self.store.exists(self.path)

    def remove(self, silent: bool = True) -> None:
        self.store.remove(self.path)

    def uri(self, return_all: bool = False):
        return [self.store.url(self.path)] if return_all else self.store.url(self.path)

    def copy_from_local(self, src: str) -> None:
        self.store.put(src, self.path)


class Publish(WorkflowOptions):
    """Copy the lwtnn JSON, ONNX file, model card and check of every training, and the evaluation
    report, to the output store (``--store``, default ``[taggerflow] publish_store``)."""

    store = luigi.Parameter(default=law.NO_STR, significant=False,
                            description="section of law.cfg defining the file system to publish to; "
                                        "default: [taggerflow] publish_store")
    sequence_names = ConvertLwtnn.sequence_names


    def requires(self):
        return {"lwtnn": ConvertLwtnn.req(self), "report": EvaluationReport.req(self)}

    def _store_name(self) -> str:
        name = self.store if self.store not in (law.NO_STR, None, "") else \
            law.config.get_expanded("taggerflow", "publish_store", "")
        if not name:
            raise ValueError("no publish store: pass --store SECTION or set [taggerflow] publish_store "
                             "in law.cfg (a law file system section with a 'base')")
        return name

    def _rel_dir(self) -> str:
        # relative to the store's base: the version and config tag (not the task name)
        return os.path.join(*self.store_parts()[1:])

    def _xrootd_store(self) -> XRootDStore | None:
        base = store_base(self._store_name())
        return XRootDStore(f"{base.rstrip('/')}/{self._rel_dir()}") if is_xrootd_url(base) else None

    def _dir(self):
        fs = store_file_system(self._store_name())
        cls = law.wlcg.WLCGDirectoryTarget if _is_remote(fs) else law.LocalDirectoryTarget
        return cls(self._rel_dir(), fs=fs)

    def output(self):
        xrd = self._xrootd_store()
        if xrd is not None:
            return XRootDFileTarget(xrd, "published.json")
        return self._dir().child("published.json", type="f")

    def deliverables(self) -> dict[str, str]:
        """Name in the store -> local path."""
        files = {}
        lw = self.input()["lwtnn"]["collection"].targets
        branch_map = self.requires()["lwtnn"].get_branch_map()
        for b in sorted(lw):
            variant = branch_map[b]
            for key, target in lw[b].items():
                files[f"{variant}/{os.path.basename(target.path)}"] = target.path
        for key, target in self.input()["report"].items():
            files[f"report/{os.path.basename(target.path)}"] = target.path
        return files

    def run(self):
        from taggerflow.utils import file_sha256, write_json

        xrd = self._xrootd_store()
        out_dir = None if xrd is not None else self._dir()
        manifest = {"config": self.cfg.name, "version": str(self.version), "files": {}}
        for name, path in self.deliverables().items():
            if xrd is not None:
                target = XRootDFileTarget(xrd, name)  # copied to a temporary name, renamed into place
            else:
                target = out_dir.child(name, type="f")
                target.parent.touch()
            # law copies to a temporary name and renames where the file system can (local, gfal2)
            target.copy_from_local(path)
            manifest["files"][name] = {"size": os.path.getsize(path), "sha256": file_sha256(path)}
            self.publish_message(f"published {name} -> {target.uri()}")
        tmp = law.LocalFileTarget(is_tmp="json")
        write_json(tmp.path, manifest)
        self.output().copy_from_local(tmp.path)
        where = xrd.url() if xrd is not None else out_dir.uri()
        self.publish_message(f"published {len(manifest['files'])} files to {where}")
