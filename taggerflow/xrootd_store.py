"""A directory on an XRootD server (``root://host[:port]//path``) written through the XRootD python
client (the ``xrootd`` wheel from PyPI; gfal2, which law's wlcg targets use, has no wheel).

Every file is copied to a temporary name next to its destination and renamed into place, so that a
reader (or an interrupted publication) never sees a half-written file under the final name."""

from __future__ import annotations

import os
import uuid

ROOT_SCHEMES = ("root://", "xroot://")
_NOT_FOUND = 3011  # kXR_NotFound


def is_xrootd_url(url: str) -> bool:
    return str(url).startswith(ROOT_SCHEMES)


def split_url(url: str, query: bool = False) -> tuple[str, str]:
    """(``root://host[:port]``, absolute path) of an XRootD URL, without its ``?`` opaque part unless
    ``query``; raises ValueError naming it."""
    url = str(url)
    scheme = next((s for s in ROOT_SCHEMES if url.startswith(s)), None)
    rest = url[len(scheme):] if scheme else ""
    host, sep, path = rest.partition("/")
    if not scheme or not host or not sep:
        raise ValueError(f"{url}: not an XRootD URL (expected root://host[:port]//path)")
    return f"{scheme}{host}", "/" + (path if query else path.split("?", 1)[0]).lstrip("/")


class XRootDStore:
    """Files under the directory ``base_url`` of an XRootD server, by path relative to it."""

    def __init__(self, base_url: str):
        try:
            from XRootD import client
        except ImportError:
            raise ImportError(f"{base_url}: publishing to root:// needs the XRootD python client "
                              "(pip install xrootd)") from None
        self.base_url = str(base_url).rstrip("/")
        self.host, self.base_path = split_url(self.base_url)
        self._fs = client.FileSystem(self.host)

    def path(self, rel: str) -> str:
        return f"{self.base_path.rstrip('/')}/{rel.lstrip('/')}"

    def url(self, rel: str = "") -> str:
        return f"{self.host}/{self.path(rel)}" if rel else f"{self.host}/{self.base_path}"

    def _check(self, status, what: str, rel: str) -> None:
        if not status.ok:
            raise OSError(f"{self.url(rel)}: {what} failed ({status.message.strip()})")

    def stat(self, rel: str):
        """The server's stat info of ``rel``, None when it does not exist."""
        status, info = self._fs.stat(self.path(rel))
        if status.ok:
            return info
        if status.errno == _NOT_FOUND:
            return None
        self._check(status, "stat", rel)

    def exists(self, rel: str) -> bool:
        return self.stat(rel) is not None

    def remove(self, rel: str) -> None:
        status, _ = self._fs.rm(self.path(rel))
        if not status.ok and status.errno != _NOT_FOUND:
            self._check(status, "remove", rel)

    def put(self, local_path: str, rel: str) -> None:
        """Copy the local file to ``rel`` (parents created): to a temporary name, checked for its size,
        then renamed over the destination."""
        from XRootD.client.flags import MkDirFlags

        parent = os.path.dirname(self.path(rel))
        status, _ = self._fs.mkdir(parent, MkDirFlags.MAKEPATH)
        self._check(status, "mkdir", os.path.dirname(rel))
        tmp = f"{rel}.tmp-{uuid.uuid4().hex[:12]}"
        status, _ = self._fs.copy(os.path.abspath(local_path), f"{self.host}/{self.path(tmp)}", force=True)
        try:
            self._check(status, f"copy of {local_path}", tmp)
            info = self.stat(tmp)
            size = os.path.getsize(local_path)
            if info is None or info.size != size:
                raise OSError(f"{self.url(tmp)}: copy of {local_path} has "
                              f"{'no file' if info is None else f'{info.size} bytes'}, expected {size}")
            status, _ = self._fs.mv(self.path(tmp), self.path(rel))
            if not status.ok:  # a server that does not rename over an existing file
                self.remove(rel)
                status, _ = self._fs.mv(self.path(tmp), self.path(rel))
            self._check(status, f"rename of {tmp}", rel)
        except BaseException:
            self.remove(tmp)
            raise


def glob_urls(pattern: str) -> list[str]:
    """The URLs matching the glob ``pattern`` (``root://host//dir/*.root``, ``*``/``?``/``[...]`` in
    any path component; so no ``?`` opaque part), sorted, through the server's directory listing
    (fsspec-xrootd)."""
    import fsspec

    host, path = split_url(pattern, query=True)
    fs = fsspec.filesystem("root", hostid=host.split("://", 1)[1])
    return sorted(f"{host}/{p if p.startswith('/') else '/' + p}" for p in fs.glob(path))
