"""A real XRootD server on localhost for the tests (Debian's ``xrootd-server``; .ci/install_xrootd.sh).

:func:`xrootd_server` starts ``xrootd`` on a free port, serving a fresh directory as ``/`` (read and
write, no authentication), waits until it accepts connections and stops it on exit. The daemon
refuses to run as root: under root it is started with ``-R <user>`` (the ``xrootd`` user the package
creates, else ``nobody``) and the served directory is owned by that user; :meth:`XRootDServer.add`
copies a file in with the right owner. The directory lives in the system's temporary directory (not
pytest's, which is private to the test user) and is removed on exit."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass

INSTALL_HINT = "run .ci/install_xrootd.sh (installs Debian's xrootd-server)"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def _run_as_user() -> str | None:
    """The user the daemon drops to when started by root (None: it runs as the caller)."""
    if os.geteuid() != 0:
        return None
    for name in ("xrootd", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    raise RuntimeError("xrootd refuses to run as root and there is no 'xrootd' or 'nobody' user to run it as")


@dataclass
class XRootDServer:
    port: int
    root: str  # local directory served as '/'
    config: str
    log: str
    user: str | None

    @property
    def host_url(self) -> str:
        return f"root://localhost:{self.port}"

    def url(self, path: str) -> str:
        """URL of ``path`` (relative to the served directory)."""
        return f"{self.host_url}//{path.lstrip('/')}"

    def local(self, path: str) -> str:
        """Local path of ``path`` (relative to the served directory)."""
        return os.path.join(self.root, path.lstrip("/"))

    def chown(self, path: str) -> None:
        if self.user is None:
            return
        pw = pwd.getpwnam(self.user)
        for top, dirs, files in os.walk(path):
            for name in [top, *[os.path.join(top, n) for n in dirs + files]]:
                os.chown(name, pw.pw_uid, pw.pw_gid)

    def mkdir(self, path: str) -> str:
        local = self.local(path)
        os.makedirs(local, exist_ok=True)
        self.chown(self.root)
        return local

    def add(self, src: str, path: str) -> str:
        """Copy the local file ``src`` to ``path`` in the served directory; returns its URL."""
        local = self.local(path)
        os.makedirs(os.path.dirname(local), exist_ok=True)
        shutil.copyfile(src, local)
        self.chown(self.root)
        return self.url(path)

    def log_tail(self, n: int = 3000) -> str:
        try:
            with open(self.log, errors="replace") as f:
                return f.read()[-n:]
        except OSError as e:
            return f"(no log: {e})"


@contextlib.contextmanager
def xrootd_server(timeout: float = 30.0, trace: bool = True) -> Iterator[XRootDServer]:
    """A running xrootd serving a new temporary directory; stopped and removed on exit. ``trace``
    logs every open of a file (``ofs.trace open``), so that a test can read the order of writes."""
    binary = shutil.which("xrootd", path=os.environ.get("PATH", "") + ":/usr/sbin:/usr/bin")
    if binary is None:
        raise RuntimeError(f"the xrootd server is not installed: {INSTALL_HINT}")
    user = _run_as_user()
    base = tempfile.mkdtemp(prefix="taggerflow-xrootd-")
    root, admin, logdir = (os.path.join(base, d) for d in ("export", "admin", "log"))
    for d in (root, admin, logdir):
        os.makedirs(d)
    port = _free_port()
    config = os.path.join(base, "xrootd.cfg")
    with open(config, "w") as f:
        # the served directory is '/' of the URLs; the server role is read-write by default
        f.write("\n".join([f"xrd.port {port}", f"oss.localroot {root}", "all.export /",
                           f"all.adminpath {admin}", f"all.pidpath {admin}",
                           *(["ofs.trace open"] if trace else []), ""]))
    name = "taggerflowtest"
    server = XRootDServer(port=port, root=root, config=config, log=os.path.join(logdir, name, "xrootd.log"), user=user)
    server.chown(base)
    cmd = [binary, "-c", config, "-n", name, "-l", os.path.join(logdir, "xrootd.log")]
    if user is not None:
        cmd += ["-R", user]
    stderr = open(os.path.join(base, "stderr.txt"), "w")
    proc = subprocess.Popen(cmd, stdout=stderr, stderr=subprocess.STDOUT, cwd=base)
    try:
        t0 = time.time()
        while True:
            if proc.poll() is not None:
                with open(os.path.join(base, "stderr.txt")) as f:
                    out = f.read()[-2000:]
                raise RuntimeError(f"xrootd exited with status {proc.returncode}: {out}\n{server.log_tail()}")
            with socket.socket() as s:
                if s.connect_ex(("localhost", port)) == 0:
                    break
            if time.time() - t0 > timeout:
                raise TimeoutError(f"xrootd did not accept connections on port {port} within {timeout:.0f} s:\n"
                                   f"{server.log_tail()}")
            time.sleep(0.1)
        yield server
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        stderr.close()
        shutil.rmtree(base, ignore_errors=True)
