"""The output collection of a workflow: the outputs of all its branches.

``ListedFileCollection`` is law's ``FileCollection`` (same attributes, same answers) with two changes
that matter for workflows of 10,000 branches:

- existence is checked with one directory listing per output directory instead of one stat per file
  (what law's ``NestedSiblingFileCollection`` does too, but that one builds a collection per directory
  when created: about 6 s for 10,000 branches of two outputs each);
- the flat list of targets is built in linear time (law's ``flatten`` concatenates lists with
  ``sum``, quadratic in the number of branches).

Targets that are not local files or directories (remote targets, nested collections) are checked the
usual way.
"""

from __future__ import annotations

import os

import law
from law.target.collection import TargetCollection
from law.target.local import LocalFileSystem
from law.util import no_value


def _flatten(struct) -> list:
    out: list = []
    stack = [struct]
    while stack:
        obj = stack.pop()
        if isinstance(obj, dict):
            stack.extend(reversed(list(obj.values())))
        elif isinstance(obj, (list, tuple, set)):
            stack.extend(reversed(list(obj)))
        else:
            out.append(obj)
    return out


class ListedFileCollection(law.FileCollection):

    def __init__(self, targets, threshold=1.0, optional_existing=None, remove_threads=None, **kwargs):
        if not isinstance(targets, (list, tuple, dict)):
            targets = list(targets)
        law.target.base.Target.__init__(self, **kwargs)
        if remove_threads is None:
            remove_threads = law.config.get_expanded_int("target", "collection_remove_threads")
        self.targets = targets
        self.threshold = threshold
        self.optional_existing = optional_existing
        self.remove_threads = remove_threads
        if isinstance(targets, dict):
            self._flat_targets = targets.__class__((k, _flatten(t)) for k, t in targets.items())
        else:
            self._flat_targets = targets.__class__(_flatten(t) for t in targets)
        self._flat_target_list = _flatten(targets)
        for t in self._flat_target_list:
            if not isinstance(t, (law.FileSystemTarget, law.FileCollection)):
                raise TypeError(f"FileCollection's only wrap FileSystemTarget's and other FileCollection's, "
                                f"got {t.__class__}")

    def _iter_state(self, existing=True, optional_existing=no_value, keys=False, unpack=True, exists_func=None):
        if optional_existing is no_value:
            optional_existing = self.optional_existing
        if existing is not None and exists_func is None:
            listings: dict[str, set[str]] = {}

            def exists_func(t):
                if optional_existing is not None and t.optional:
                    return bool(optional_existing)
                if isinstance(t, TargetCollection):
                    return t.exists(optional_existing=optional_existing)
                if not isinstance(getattr(t, "fs", None), LocalFileSystem):
                    return t.exists()
                path = os.path.abspath(t.path)
                parent, name = os.path.split(path)
                if parent not in listings:
                    try:
                        listings[parent] = set(os.listdir(parent))
                    except OSError:
                        listings[parent] = set()
                return name in listings[parent]

        return super()._iter_state(existing=existing, optional_existing=optional_existing, keys=keys, unpack=unpack,
                                   exists_func=exists_func)
