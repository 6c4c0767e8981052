"""env.sh with a virtual environment shared by two checkouts: sourcing it from a checkout that does not
own the environment never installs into it nor re-points its editable install, and that checkout's own
code is what its shell imports; the owning checkout re-installs when its pyproject.toml changes.

Everything runs against a throwaway environment (``python -m venv --without-pip``) whose ``pip`` is a
stand-in that only logs its arguments, and whose editable install of checkout A is a copy of this
environment's (path replaced): the environment running the tests is only read, never installed into."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import sysconfig

import pytest

from conftest import REPO

COPIED = ("env.sh", "pyproject.toml", "law.cfg", "taggerflow", "tasks", "workflows", "configs")
FAKE_PIP = ("import os, sys\n"
            "with open(os.environ['FAKE_PIP_LOG'], 'a') as f:\n"
            "    f.write(' '.join(sys.argv[1:]) + '\\n')\n")


def _checkout(dest) -> str:
    os.makedirs(dest)
    for name in COPIED:
        src = os.path.join(REPO, name)
        if os.path.isdir(src):
            shutil.copytree(src, os.path.join(dest, name), ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, os.path.join(dest, name))
    return str(dest)


def _sha256(path) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _real_editable_install() -> tuple[str | None, dict[str, str]]:
    """The checkout this test environment's taggerflow is installed from, and its editable-install
    files in site-packages (name: text); (None, {}) when taggerflow is not installed here."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-c", "import os, taggerflow; "
                           "print(os.path.dirname(os.path.dirname(os.path.abspath(taggerflow.__file__))))"],
                          cwd="/", env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        return None, {}
    site = sysconfig.get_paths()["purelib"]
    files = {}
    for name in os.listdir(site):
        if name.startswith("__editable__") and "taggerflow" in name:
            with open(os.path.join(site, name)) as f:
                files[name] = f.read()
    return proc.stdout.strip(), files


@pytest.fixture
def shared(tmp_path):
    """Checkouts A (owns the environment) and B, and the environment, installed from A."""
    a, b = _checkout(tmp_path / "A"), _checkout(tmp_path / "B")
    venv = str(tmp_path / "venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True)
    vpy = os.path.join(venv, "bin", "python")
    site = subprocess.run([vpy, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    os.makedirs(os.path.join(site, "pip"))
    open(os.path.join(site, "pip", "__init__.py"), "w").close()
    with open(os.path.join(site, "pip", "__main__.py"), "w") as f:
        f.write(FAKE_PIP)
    owner, files = _real_editable_install()
    if files:   # this environment's editable install, pointed at A
        for name, text in files.items():
            with open(os.path.join(site, name), "w") as f:
                f.write(text.replace(os.path.join(owner, ""), os.path.join(a, "")).replace(f"'{owner}'", f"'{a}'"))
    else:
        with open(os.path.join(site, "taggerflow_checkout.pth"), "w") as f:
            f.write(a + "\n")
    stamp = os.path.join(venv, ".taggerflow_installed")
    with open(stamp, "w") as f:
        f.write(f"{_sha256(os.path.join(a, 'pyproject.toml'))} {a}\n")
    return {"A": a, "B": b, "venv": venv, "python": vpy, "stamp": stamp, "pip_log": str(tmp_path / "pip.log"),
            "tmp": tmp_path}


def _source(shared, checkout: str, **extra) -> dict:
    """Source ``checkout``'s env.sh in a fresh bash; what it printed, its status, the taggerflow that
    shell imports, and the one the environment alone (no PYTHONPATH) imports."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "LAW_JOB_HOME")}
    env.update({"TAGGERFLOW_VENV": shared["venv"], "TAGGERFLOW_DATA": str(shared["tmp"] / "data"),
                "FAKE_PIP_LOG": shared["pip_log"], **extra})
    script = ('source "$1/env.sh" >"$2.out" 2>"$2.err"; rc=$?\n'
              'python -c "import taggerflow; print(taggerflow.__file__)"\n'
              'cd / && PYTHONPATH= python -c "import taggerflow; print(taggerflow.__file__)"\n'
              'exit $rc\n')
    out = str(shared["tmp"] / "source")
    proc = subprocess.run(["bash", "-c", script, "bash", checkout, out], env=env, cwd=shared["tmp"],
                          capture_output=True, text=True, timeout=300)
    imported = proc.stdout.split()
    assert len(imported) == 2, proc.stdout + proc.stderr
    pip = open(shared["pip_log"]).read() if os.path.exists(shared["pip_log"]) else ""
    return {"rc": proc.returncode, "stdout": open(out + ".out").read(), "stderr": open(out + ".err").read(),
            "shell_imports": imported[0], "venv_imports": imported[1], "pip": pip,
            "stamp": open(shared["stamp"]).read()}


def _touch_later(path) -> None:
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**10))


def test_second_checkout_never_installs_nor_repoints(shared):
    a, b = shared["A"], shared["B"]
    stamp = open(shared["stamp"]).read()
    # a fresh clone: same pyproject.toml, newer than the stamp
    _touch_later(os.path.join(b, "pyproject.toml"))
    r = _source(shared, b)
    assert r["rc"] == 0, r["stderr"]
    assert r["pip"] == "" and "installing" not in r["stdout"]
    assert r["stamp"] == stamp
    assert r["shell_imports"] == os.path.join(b, "taggerflow", "__init__.py")   # its own code
    assert r["venv_imports"] == os.path.join(a, "taggerflow", "__init__.py")    # install still points to A
    assert "differs" not in r["stderr"]
    # B's pyproject.toml differs: still no install, and a warning naming the owner
    with open(os.path.join(b, "pyproject.toml"), "a") as f:
        f.write("# changed in B\n")
    r = _source(shared, b)
    assert r["rc"] == 0 and r["pip"] == "" and r["stamp"] == stamp
    assert r["venv_imports"] == os.path.join(a, "taggerflow", "__init__.py")
    assert f"was installed from {a}, whose pyproject.toml differs from this checkout's" in r["stderr"]


def test_owner_reinstalls_when_its_pyproject_changes(shared):
    a = shared["A"]
    pyproject = os.path.join(a, "pyproject.toml")
    # newer but same content: nothing to do
    _touch_later(pyproject)
    r = _source(shared, a)
    assert r["rc"] == 0 and r["pip"] == ""
    # changed content: a batch job never installs into an existing environment ...
    with open(pyproject, "a") as f:
        f.write("# a new dependency\n")
    r = _source(shared, a, LAW_JOB_HOME=str(shared["tmp"]))
    assert r["rc"] == 0 and r["pip"] == ""
    # ... the owner's shell does, once, and records the new content
    r = _source(shared, a)
    assert r["rc"] == 0, r["stderr"]
    assert r["pip"] == f"install --quiet --upgrade pip\ninstall --quiet -e {a}[test]\n"
    assert r["stamp"] == f"{_sha256(pyproject)} {a}\n"
    assert _source(shared, a)["pip"] == r["pip"]   # sourcing again: no second install


def test_stamp_of_an_older_env_sh_is_adopted_only_by_its_checkout(shared):
    a, b = shared["A"], shared["B"]
    open(shared["stamp"], "w").close()   # older env.sh: an empty stamp
    r = _source(shared, b)
    assert r["rc"] == 0 and r["pip"] == "" and r["stamp"] == ""
    r = _source(shared, a)
    assert r["rc"] == 0 and r["pip"] == ""
    assert r["stamp"] == f"{_sha256(os.path.join(a, 'pyproject.toml'))} {a}\n"
