"""root:// for real: a real XRootD server on localhost (Debian's xrootd-server, .ci/install_xrootd.sh;
started by tests/xrootd_server.py) serves the input files and receives the published deliverables.

* Spectrum -> ShuffleMergeSpectral -> FeatureScaling -> MergeScaling -> WriteTrainSample on root://
  URLs gives the same files, byte for byte, as the same chain on the local paths of the same files;
* Publish to a root:// store copies through the XRootD python client, every file with its sha256,
  the manifest last; a store without its manifest is copied again;
* a root:// URL that cannot be read is an error naming the URL."""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import shutil

import pytest

from conftest import REPO, tiny_raw, write_config
from test_e2e import _law
from test_e2e import _law_env as e2e_law_env
from xrootd_server import INSTALL_HINT, xrootd_server

VERSION = "xrd"
CHAIN = ("Spectrum", "ShuffleMergeSpectral", "FeatureScaling", "MergeScaling", "WriteTrainSample")


@pytest.fixture(scope="session")
def xrootd():
    """One XRootD server for the test session."""
    if shutil.which("xrootd", path=os.environ.get("PATH", "") + ":/usr/sbin:/usr/bin") is None:
        pytest.fail(f"the xrootd server is not installed: {INSTALL_HINT}")
    with xrootd_server() as server:
        yield server


def _law_env(tmp, extra: dict | None = None) -> dict:
    return dict(e2e_law_env(tmp), **(extra or {}))


def _sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _outputs(data) -> dict[str, str]:
    """sha256 of every output of the chain by its path relative to $TAGGERFLOW_DATA."""
    out = {}
    for task in CHAIN:
        assert len(glob.glob(str(data / task / VERSION / "*"))) == 1, task  # one configuration tag
        for top, _, files in os.walk(data / task):
            for name in files:
                path = os.path.join(top, name)
                out[os.path.relpath(path, data)] = _sha256(path)
    return out


def _opened(server, prefix: str) -> list[tuple[str, str]]:
    """(open flags, path) of every open of a file under ``prefix`` the server logged, in order."""
    with open(server.log) as f:
        return re.findall(rf"ofs_open: (\S+) fn=({re.escape(prefix)}\S*)", f.read())


@pytest.fixture(scope="module")
def runs(xrootd, demo_files, tmp_path_factory):
    """The chain to WriteTrainSample run twice with `law run` on one configuration whose files are
    ``$TAGGERFLOW_TEST_INPUTS/<dataset>/<file>``: once with the served directory's local path, once with
    its root:// URL (the same configuration, so the same output paths and configuration hashes)."""
    for ds, path in demo_files.items():
        xrootd.add(path, f"inputs/{ds}/{os.path.basename(path)}")
    cfg_dir = tmp_path_factory.mktemp("xrd_config")
    raw = tiny_raw()
    del raw["demo"]
    # the first dataset as a glob (expanded through the server's listing for root://), the others listed
    raw["inputs"]["datasets"] = {
        ds: {"files": [f"${{TAGGERFLOW_TEST_INPUTS}}/{ds}/{'*.root' if i == 0 else os.path.basename(path)}"]}
        for i, (ds, path) in enumerate(demo_files.items())}
    config = write_config(raw, cfg_dir)
    out = {"inputs": {ds: f"inputs/{ds}/{os.path.basename(path)}" for ds, path in demo_files.items()}}
    for kind, inputs in (("local", xrootd.local("inputs")), ("root", xrootd.url("inputs"))):
        tmp = tmp_path_factory.mktemp(f"xrd_{kind}")
        env = _law_env(tmp, {"TAGGERFLOW_TEST_INPUTS": inputs})
        _law(["index", "-q"], env)
        _law(["run", "WriteTrainSample", "--version", VERSION, "--config", config, "--workflow", "local"], env)
        out[kind] = {"env": env, "config": config, "data": tmp / "data"}
    return out


@pytest.mark.slow
def test_root_inputs_give_the_same_training_files_as_local_paths(runs, xrootd):
    """Every output of Spectrum to WriteTrainSample is byte-identical whether the inputs are read from
    their local paths or through the XRootD server (which logged the reads)."""
    local, remote = _outputs(runs["local"]["data"]), _outputs(runs["root"]["data"])
    assert set(local) == set(remote)
    for task in CHAIN:
        assert any(k.startswith(f"{task}/") for k in local), task
    assert any(k.startswith("WriteTrainSample/") and k.endswith(".h5") for k in local)
    differ = sorted(k for k in local if local[k] != remote[k])
    assert differ == [], f"outputs that differ between local and root:// inputs: {differ}"
    # the inputs are recorded relative to their dataset's root, not where they were read from
    manifest = glob.glob(str(runs["root"]["data"] / "ShuffleMergeSpectral" / "*" / "*" / "manifest_0.json"))
    with open(manifest[0]) as f:
        files = json.load(f)["files"]
    assert sorted(files) == sorted(f"{ds}/{os.path.basename(p)}" for ds, p in runs["inputs"].items())
    assert {path for _, path in _opened(xrootd, "/inputs/")} == {"/" + p for p in runs["inputs"].values()}


def test_a_root_url_that_cannot_be_read_names_the_url(xrootd, files_config):
    """A URL goes to the server unchanged (no existence check on the local disk): a missing file, a
    file cut after its header and a file cut in its data are InputErrors naming the URL."""
    from taggerflow.io import InputError
    from taggerflow.readers import input_spec, open_source

    spec = input_spec(files_config, files_config.dataset_names[0])
    missing = xrootd.url("inputs/nowhere/missing.root")
    with pytest.raises(InputError, match=rf"^{re.escape(missing)}: cannot be read as a ROOT file "
                                         r"\(OSError: .*no such file or directory"):
        open_source(spec, missing)
    with open(files_config.dataset_files()[files_config.dataset_names[0]][0], "rb") as f:
        data = f.read()
    xrootd.mkdir("inputs/bad")
    for name, size in (("header_only.root", 300), ("half.root", len(data) // 2)):
        with open(xrootd.local(f"inputs/bad/{name}"), "wb") as f:
            f.write(data[:size])
        xrootd.chown(xrootd.root)
        url = xrootd.url(f"inputs/bad/{name}")
        with pytest.raises(InputError, match=rf"^{re.escape(url)}: (cannot be read as a ROOT file|failed to read "
                                             r"entries 0-\d+ of tree 'candidates') \(OSError: "):
            source = open_source(spec, url)
            source.read(0, source.num_entries, source.fields())


def test_xrootd_store_copies_renames_and_reports_errors(xrootd, tmp_path):
    """The store behind Publish's root:// path: a file arrives under its name only complete (written
    to a temporary name, renamed), an existing file is replaced, and failures name the URL."""
    from taggerflow.xrootd_store import XRootDStore, split_url

    assert split_url(f"root://localhost:{xrootd.port}//a/b") == (f"root://localhost:{xrootd.port}", "/a/b")
    with pytest.raises(ValueError, match="https://x/y: not an XRootD URL"):
        split_url("https://x/y")
    store = XRootDStore(xrootd.url("unit/store"))
    src = tmp_path / "a.bin"
    src.write_bytes(b"first version")
    assert not store.exists("d/a.bin")
    store.put(str(src), "d/a.bin")
    assert store.exists("d/a.bin")
    assert open(xrootd.local("unit/store/d/a.bin"), "rb").read() == b"first version"
    src.write_bytes(b"second, longer version")
    store.put(str(src), "d/a.bin")
    assert open(xrootd.local("unit/store/d/a.bin"), "rb").read() == b"second, longer version"
    assert os.listdir(xrootd.local("unit/store/d")) == ["a.bin"]  # no temporary file left
    writes = [p for flags, p in _opened(xrootd, "/unit/store/d/") if flags != "0-600"]
    assert len(writes) == 2 and all(re.fullmatch(r"/unit/store/d/a\.bin\.tmp-[0-9a-f]{12}", p) for p in writes)
    store.remove("d/a.bin")
    assert not store.exists("d/a.bin")
    # a file where a directory is needed: the error names the URL and what failed
    store.put(str(src), "d/x")
    with pytest.raises(OSError, match=rf"^{re.escape(xrootd.url('unit/store/d/x/y'))}: mkdir failed \("):
        store.put(str(src), "d/x/y/b.bin")
    with pytest.raises(OSError, match=r"copy of .*nothing\.bin failed"):
        store.put(str(tmp_path / "nothing.bin"), "d/nothing.bin")
    assert not store.exists("d/nothing.bin")


@pytest.mark.slow
def test_publish_to_a_root_store(runs, xrootd, tmp_path):
    """Publish (after the training on the root:// inputs) copies the deliverables to a root:// store
    through the XRootD client: sizes and sha256 as in the manifest and as the local outputs, the
    manifest written last; with the manifest there it is complete, without it a rerun copies again."""
    run = runs["root"]
    cfg = tmp_path / "law.cfg"
    cfg.write_text(f"[core]\ninherit: {os.path.join(REPO, 'law.cfg')}\n\n"
                   f"[xrd_store]\nbase: {xrootd.url('store')}\n")
    env = dict(run["env"], LAW_CONFIG_FILE=str(cfg))
    args = ["run", "Publish", "--version", VERSION, "--config", run["config"], "--store", "xrd_store"]
    proc = _law(args, env)
    manifest_path = glob.glob(xrootd.local(f"store/{VERSION}/*/published.json"))
    assert len(manifest_path) == 1, manifest_path
    root = os.path.dirname(manifest_path[0])
    rel_root = "/" + os.path.relpath(root, xrootd.root)
    manifest = json.loads(open(manifest_path[0]).read())
    names = set(manifest["files"])
    for variant in ("deepsets", "dense"):
        assert {f"{variant}/lwtnn.json", f"{variant}/model.onnx", f"{variant}/model_card.json"} <= names
    assert "report/report.md" in names
    for name, info in manifest["files"].items():
        data = open(os.path.join(root, name), "rb").read()
        assert len(data) == info["size"] and hashlib.sha256(data).hexdigest() == info["sha256"], name
    local_lwtnn = glob.glob(str(run["data"] / "ConvertLwtnn" / VERSION / "*" / "deepsets" / "lwtnn.json"))
    assert len(local_lwtnn) == 1 and _sha256(local_lwtnn[0]) == manifest["files"]["deepsets/lwtnn.json"]["sha256"]
    published = sorted(os.path.relpath(os.path.join(t, n), root) for t, _, fs in os.walk(root) for n in fs)
    assert published == sorted(names | {"published.json"})  # no temporary file left
    # the server's order of writes: every deliverable, then the manifest
    writes = [p[len(rel_root) + 1:] for flags, p in _opened(xrootd, rel_root + "/") if flags != "0-600"]
    finals = [re.sub(r"\.tmp-[0-9a-f]{12}$", "", p) for p in writes]
    assert finals[-1] == "published.json" and sorted(finals[:-1]) == sorted(names), writes
    assert f"published {len(names)} files to {xrootd.url('store')}" in proc.stdout + proc.stderr
    # complete while the manifest is there: a rerun writes nothing
    _law(args, env)
    assert len(_opened(xrootd, rel_root + "/")) == len(writes)
    # without the manifest the store is incomplete: a rerun copies every file again
    os.remove(manifest_path[0])
    with open(os.path.join(root, "dense", "lwtnn.json"), "wb") as f:
        f.write(b"half a file")
    _law(args, env)
    again = [p for flags, p in _opened(xrootd, rel_root + "/") if flags != "0-600"][len(writes):]
    assert len(again) == len(writes) and again[-1].startswith(f"{rel_root}/published.json.tmp-")
    assert json.loads(open(manifest_path[0]).read()) == manifest
    assert _sha256(os.path.join(root, "dense", "lwtnn.json")) == manifest["files"]["dense/lwtnn.json"]["sha256"]


def test_glob_urls_lists_the_server(xrootd, demo_files):
    """glob_urls expands a glob on a root:// URL through the server's directory listing (not yet
    used by the configuration, which refuses globs on URLs: tests/test_readers.py)."""
    from taggerflow.xrootd_store import glob_urls

    src = next(iter(demo_files.values()))
    for name in ("a/x_1.root", "a/x_2.root", "a/y.root", "b/x_3.root", "b/x_3.txt"):
        xrootd.add(src, f"glob/{name}")
    assert glob_urls(xrootd.url("glob/*/x_*.root")) == [xrootd.url(f"glob/{n}") for n in
                                                        ("a/x_1.root", "a/x_2.root", "b/x_3.root")]
    assert glob_urls(xrootd.url("glob/a/x_?.root")) == [xrootd.url("glob/a/x_1.root"), xrootd.url("glob/a/x_2.root")]
    assert glob_urls(xrootd.url("glob/c/*.root")) == []
