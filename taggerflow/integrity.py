"""Corruption caught where it enters: truncated ROOT inputs, changed shards, absurd moments.

* :func:`check_baskets`: every basket of the given branches lies within the file (uproot gives each
  branch's basket seek positions and byte sizes; no data is read), so a truncated input fails in
  Spectrum, naming the file and the branch, not later in a shuffle job or never.
* :func:`write_shard_checksum` / :func:`verify_shard`: a shard's sha256 is recorded in its manifest
  (key ``sha256``) when the shard is written; every task that reads a shard verifies it first, so a
  shard changed on disk (a bad write, bit rot, an edit) fails naming the shard and its manifest.
* :func:`check_moments`: moments of a FeatureScaling job that are not finite or absurdly large (|mean|
  or std above :data:`ABSURD_MOMENT`) name the variable, the cone, the shard and the job.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence

import numpy as np

from taggerflow.io import InputError
from taggerflow.utils import file_sha256

#: moments beyond this are taken as corruption (physics variables are far below; float32 max is 3.4e38)
ABSURD_MOMENT = 1e30


# ---------------------------------------------------------------------------------------------
# truncated inputs
def source_size(tree, path: str) -> int | None:
    """Size in bytes of the file ``tree`` was read from (local or remote), None when unknown."""
    try:
        size = tree.file.source.num_bytes
        if size is not None:
            return int(size)
    except Exception:   # a source without a size (or one whose stat failed)
        pass
    if "://" not in str(path):
        try:
            return os.path.getsize(path)
        except OSError:
            return None
    return None


def _with_subbranches(branches) -> list:
    out = []
    for b in branches:
        out.append(b)
        if b.branches:
            out.extend(_with_subbranches(b.branches))
    return out


def check_baskets(tree, path: str, names: Iterable[str] | None = None) -> None:
    """Raise InputError (one line: the file, the branch, the byte range) if a basket of one of the
    branches ``names`` of ``tree`` (default: every branch; sub-branches included) ends beyond the end
    of the file (a truncated or cut file). No data is read: the seek positions and sizes come from the
    branches' metadata, compared in one vectorised step (a few us per branch)."""
    size = source_size(tree, path)
    if size is None:
        return
    branches = _with_subbranches(tree.branches if names is None else [tree[n] for n in names])
    n_baskets = [b.num_baskets for b in branches]
    if not any(n_baskets):
        return
    # one concatenation of the (big-endian) arrays, one conversion: a few us per file, not per branch
    seeks = np.concatenate([b.member("fBasketSeek")[:n] for b, n in zip(branches, n_baskets)]).astype(np.int64)
    ends = seeks + np.concatenate([b.member("fBasketBytes")[:n] for b, n in zip(branches, n_baskets)])
    if int(ends.max()) <= size:
        return
    first = int(np.argmax(ends > size))   # the first basket beyond the end, in branch order
    owner = int(np.searchsorted(np.cumsum(n_baskets), first, side="right"))
    basket = first - int(sum(n_baskets[:owner]))
    raise InputError(f"{path}: truncated or corrupt file: branch '{branches[owner].name}' has basket {basket} at "
                     f"bytes {int(seeks[first])}-{int(ends[first])}, beyond the end of the file ({size} bytes)")


def needed_branches(cfg, spec, src, required: dict[str, str] | None = None) -> list[str] | None:
    """The branches of an input file that Spectrum and the later stages read, None for all of them:
    for a candidate tree every branch not disabled by ``resampling.disabled_branches`` (the shuffle
    copies them all into the shards), the raw branches of what the configuration needs (``required``,
    default cfg.required_branches(), through the aliases) and the counters of the jagged ones; for a
    NanoAOD tree every branch (the reader's names differ from the tree's)."""
    from taggerflow.readers import match_any

    disabled = list((cfg.raw.get("resampling") or {}).get("disabled_branches") or [])
    if spec.format == "nanoaod" or not disabled:
        return None
    keys = [b.name for b in src.tree.branches]
    need = spec.raw_fields_for(cfg.required_branches() if required is None else required)
    need = {k for k in keys if k in need or not match_any(k, disabled)}
    for k in list(need):   # and the counter of each jagged branch kept (disabled or not)
        count = getattr(src.tree[k], "count_branch", None)
        if count is not None:
            need.add(count.name)
    return [k for k in keys if k in need]


def check_rntuple_pages(ntuple, path: str) -> None:
    """check_baskets for an RNTuple: raise InputError (one line: the file, the field, the byte range)
    if a page of any column (or the page list of a cluster group) ends beyond the end of the file.
    No data is read: the locators come from the footer and page lists uproot reads on open."""
    size = source_size(ntuple, path)
    if size is None:
        return
    footer = ntuple.footer
    for group in footer.cluster_group_records:
        loc = group.page_list_link.locator
        if loc.offset + loc.num_bytes > size:
            raise InputError(f"{path}: truncated or corrupt file: RNTuple '{ntuple.name}' page list at bytes "
                             f"{loc.offset}-{loc.offset + loc.num_bytes}, beyond the end of the file ({size} bytes)")
    for clusters in ntuple.page_link_list:
        for column, pages in enumerate(clusters):
            for page in pages.pages:
                loc = page.locator
                end = loc.offset + loc.num_bytes
                if end > size:
                    field = ntuple.field_records[ntuple.column_records[column].field_id].field_name \
                        if column < len(ntuple.column_records) else f"column {column}"
                    raise InputError(f"{path}: truncated or corrupt file: field '{field}' has a page at bytes "
                                     f"{loc.offset}-{end}, beyond the end of the file ({size} bytes)")


def check_input_baskets(cfg, spec, src, required: dict[str, str] | None = None) -> None:
    """check_baskets over needed_branches of an open source (ROOT trees; every page of an RNTuple;
    HDF5 inputs have none)."""
    tree = getattr(src, "tree", None)
    if tree is None or not hasattr(tree, "file"):
        return
    import uproot.behaviors.RNTuple

    if isinstance(tree, uproot.behaviors.RNTuple.RNTuple):   # pages, not baskets
        check_rntuple_pages(tree, src.path)
        return
    check_baskets(tree, src.path, needed_branches(cfg, spec, src, required))


# ---------------------------------------------------------------------------------------------
# shard checksums
def write_shard_checksum(manifest: dict, shard_path: str) -> dict:
    """Record the sha256 of the written shard in its manifest (key ``sha256``); returns the manifest."""
    manifest["sha256"] = file_sha256(shard_path)
    return manifest


def verify_shard(shard_path: str, manifest_path: str) -> None:
    """Raise InputError (one line naming the shard and its manifest) unless the shard's sha256 equals
    the one its manifest recorded when the shard was written."""
    import json

    try:
        with open(manifest_path) as f:
            want = json.load(f).get("sha256")
    except (OSError, ValueError) as e:
        raise InputError(f"{shard_path}: its manifest {manifest_path} cannot be read ({type(e).__name__}: {e})"
                         ) from None
    if not want:
        raise InputError(f"{shard_path}: its manifest {manifest_path} records no sha256 (written by an older "
                         f"version: delete the shard and its manifest and rerun ShuffleMergeSpectral)")
    if not os.path.exists(shard_path):
        raise InputError(f"{shard_path}: shard does not exist (its manifest: {manifest_path})")
    got = file_sha256(shard_path)
    if got != want:
        raise InputError(f"{shard_path}: corrupt or changed shard: sha256 {got[:16]}... differs from "
                         f"{want[:16]}... recorded in its manifest {manifest_path} (delete "
                         f"the shard and its manifest and rerun ShuffleMergeSpectral)")


def verify_shards(shard_paths: Sequence[str], manifest_paths: Sequence[str]) -> None:
    """verify_shard for each (shard, manifest) pair, all before any shard is read."""
    if len(shard_paths) != len(manifest_paths):
        raise ValueError(f"verify_shards: {len(shard_paths)} shards but {len(manifest_paths)} manifests")
    for shard, manifest in zip(shard_paths, manifest_paths):
        verify_shard(shard, manifest)


# ---------------------------------------------------------------------------------------------
# absurd moments
def absurd_moment(m: dict) -> str | None:
    """Why the moments ``m`` (Moments.to_dict form) cannot be real data, or None if they can."""
    num = int(m.get("num", 0))
    if num <= 0:
        return None
    mean, m2 = float(m["mean"]), float(m["m2"])
    if not (math.isfinite(mean) and math.isfinite(m2)):
        return f"mean {mean:.3g}, M2 {m2:.3g} not finite"
    std = math.sqrt(m2 / num) if m2 > 0 else 0.0
    if abs(mean) > ABSURD_MOMENT or std > ABSURD_MOMENT:
        return f"mean {mean:.3g}, std {std:.3g} (|mean| or std above {ABSURD_MOMENT:g})"
    return None


def check_moments(moments: dict, where: str, error: type[Exception] = ValueError) -> None:
    """Raise ``error`` naming ``where`` (job and shard), the variable and the cone on the first absurd
    moments of ``moments`` ({type: {var: {cone: Moments.to_dict()}}})."""
    for t, vs in moments.items():
        for v, cones in vs.items():
            for c, m in cones.items():
                why = absurd_moment(m)
                if why is not None:
                    raise error(f"{where}: variable {t}.{v}, cone {c}: {why}: corrupt input or shard "
                                     f"(check the shard against its manifest, rerun FeatureScaling)")
