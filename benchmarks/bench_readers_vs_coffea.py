"""Our readers (taggerflow.readers: nanoaod, taggerflow.formats: physlite, delphes) against coffea's
NanoEvents schemas (NanoAODSchema/PFNanoAODSchema, PHYSLITESchema, DelphesSchema) on the same real
files (tests/coffea_samples.py), reading the same candidates and constituents:

* PHYSLITE: ``AnalysisJets`` pt/eta/event + the ghost-associated tracks' d0 (element links);
* Delphes: ``Jet`` PT/Eta/event + the ``EFlowTrack`` constituents' PT (TRefArray references);
* PFNano: ``Jet`` pt/eta/event + the PF candidates' pt through ``JetPFCands``; and the same on a copy
  of pfnano.root repeated ``--copies`` times (the per-candidate cost at some size).

    .venv/bin/python benchmarks/bench_readers_vs_coffea.py [--coffea-python PY] [--repeat 20]

coffea is not a dependency of the project: give ``--coffea-python`` the interpreter of a separate
environment that has it (``python3.11 -m venv /tmp/coffea_venv && /tmp/coffea_venv/bin/pip install
coffea``); the benchmark says so, in its output, when coffea is not importable there. Each reading
runs in a fresh process (so import time and peak RSS are its own): import time, the first open +
read (cold), the medians of ``--repeat`` further opens (uproot deserialising the tree's metadata:
1494 branches for PHYSLITE) and reads (the columns wanted, constituents attached; per candidate),
the peak RSS, and the counts and a checksum of the constituent values (both readers must agree). Last, what coffea brings:
the distributions it requires (recursively) and their installed size, and how many of them the
project's environment lacks.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)

FILES = {"physlite": "PHYSLITE_example.root", "delphes": "delphes.root", "nanoaod": "pfnano.root"}
TREES = {"physlite": "CollectionTree", "delphes": "Delphes", "nanoaod": "Events"}


# -- the readings (run in a worker process) ---------------------------------------------------------
def ours_setup(fmt: str):
    t0 = time.perf_counter()
    sys.path.insert(0, REPO)
    from taggerflow.readers import InputSpec, open_source

    sections = {
        "physlite": {"container": "AnalysisJets",
                     "constituents": {"tracks": {"container": "InDetTrackParticles", "link": "GhostTrack"}}},
        "delphes": {"collection": "Jet", "variables": {"pt": "PT", "eta": "Eta"},
                    "constituents": {"tracks": {"collection": "EFlowTrack"}}},
    }
    if fmt == "nanoaod":
        spec = InputSpec(format="nanoaod", tree="Events", sections={"nanoaod": {
            "collection": "Jet", "constituents": {"pf": {"collection": "PFCands", "link": {
                "collection": "JetPFCands", "candidate_index": "jetIdx", "constituent_index": "pFCandsIdx"}}}}})
    else:
        spec = InputSpec(format=fmt, tree=TREES[fmt], sections={fmt: sections[fmt]})
    if fmt != "nanoaod":
        __import__(f"taggerflow.formats.{fmt}")
    cons = {"physlite": "tracks_d0", "delphes": "tracks_PT", "nanoaod": "pf_pt"}[fmt]
    import awkward as ak

    def read(src):
        arr = src.read(0, src.num_entries, ["pt", "eta", "event", cons])
        src.close()
        return len(arr), ak.to_numpy(ak.num(arr[cons])), ak.to_numpy(ak.flatten(arr[cons]))

    return time.perf_counter() - t0, lambda path: open_source(spec, path), read


def coffea_setup(fmt: str):
    t0 = time.perf_counter()
    import warnings

    warnings.filterwarnings("ignore")
    import awkward as ak
    import numpy as np
    from coffea.nanoevents import DelphesSchema, NanoEventsFactory, PFNanoAODSchema, PHYSLITESchema

    schema = {"physlite": PHYSLITESchema, "delphes": DelphesSchema, "nanoaod": PFNanoAODSchema}[fmt]
    elapsed = time.perf_counter() - t0

    def events(path):
        return NanoEventsFactory.from_root({path: TREES[fmt]}, schemaclass=schema).events()

    def read(ev):
        if fmt == "physlite":
            from coffea.nanoevents.methods.physlite import _element_link   # jets have no GhostTrack method

            jets = ev.Jets
            n = len(ak.flatten(jets.pt)) + 0 * len(ak.flatten(jets.eta)) + 0 * len(ev.EventInfo.eventNumber)
            links = jets.GhostTrack
            d0 = _element_link(ev.InDetTrackParticles, jets._eventindex, links.m_persIndex, links.m_persKey).d0
            d0 = ak.drop_none(ak.flatten(d0, axis=1), axis=1)
            return n, ak.to_numpy(ak.num(d0)), ak.to_numpy(ak.flatten(d0))
        if fmt == "delphes":
            # DelphesSchema leaves Jet.Constituents as raw references: matched here to EFlowTrack's
            # fUniqueID (low 24 bits) as a coffea user has to
            jets = ev.Jet
            n = len(ak.flatten(jets.PT)) + 0 * len(ak.flatten(jets.Eta)) + 0 * len(ev.Event.Number)
            refs = ak.flatten(jets.Constituents.refs, axis=1)
            nref = ak.to_numpy(ak.num(refs))
            ncand = ak.to_numpy(ak.num(jets.PT))
            ev_of_ref = np.repeat(np.repeat(np.arange(len(ncand)), ncand), nref)
            key = (ev_of_ref << 24) | ak.to_numpy(ak.flatten(refs)).astype(np.int64)
            trk = ev.EFlowTrack
            ntrk = ak.to_numpy(ak.num(trk.PT))
            tkey = (np.repeat(np.arange(len(ntrk)), ntrk) << 24) | (ak.to_numpy(ak.flatten(trk.fUniqueID))
                                                                   .astype(np.int64) & 0xFFFFFF)
            order = np.argsort(tkey, kind="stable")
            pos = np.minimum(np.searchsorted(tkey[order], key), len(tkey) - 1)
            found = tkey[order][pos] == key
            pt = ak.to_numpy(ak.flatten(trk.PT))[order[pos[found]]]
            counts = np.bincount(np.repeat(np.arange(len(nref)), nref)[found], minlength=len(nref))
            return n, counts, pt
        jets = ev.Jet
        n = len(ak.flatten(jets.pt)) + 0 * len(ak.flatten(jets.eta)) + 0 * len(ev.event)
        pt = ak.flatten(jets.constituents.pf.pt, axis=1)
        return n, ak.to_numpy(ak.num(pt)), ak.to_numpy(ak.flatten(pt))

    return elapsed, events, read


def peak_rss_mb() -> float:
    """This process's peak RSS (VmHWM: per address space, so not the parent's peak that ru_maxrss
    carries over fork and exec)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker(reader: str, fmt: str, path: str, repeat: int) -> dict:
    import numpy as np

    import_s, open_file, read = (ours_setup if reader == "ours" else coffea_setup)(fmt)
    rss_import = peak_rss_mb()
    t0 = time.perf_counter()
    n, counts, values = read(open_file(path))
    first = time.perf_counter() - t0
    opens, reads = [], []
    for _ in range(repeat):
        t0 = time.perf_counter()
        handle = open_file(path)
        t1 = time.perf_counter()
        read(handle)
        opens.append(t1 - t0)
        reads.append(time.perf_counter() - t1)
    open_s = float(np.median(opens)) if opens else float("nan")
    read_s = float(np.median(reads)) if reads else first
    return {"reader": reader, "format": fmt, "import_s": import_s, "first_s": first, "open_s": open_s,
            "read_s": read_s, "us_per_candidate": 1e6 * read_s / max(n, 1), "candidates": int(n),
            "constituents": int(counts.sum()),
            "checksum": float(np.sum(values.astype(np.float64))), "rss_after_import_mb": rss_import,
            "peak_rss_mb": peak_rss_mb()}


def scaled_pfnano(source: str, copies: int, workdir: str) -> str:
    """pfnano.root repeated ``copies`` times (every branch; new event numbers): the per-candidate cost
    at a size where the per-file overhead no longer dominates."""
    import awkward as ak
    import numpy as np
    import uproot

    path = os.path.join(workdir, f"pfnano_x{copies}.root")
    if os.path.exists(path):
        return path
    t = uproot.open(source)["Events"]
    flat, colls = {}, {}
    for b in t.branches:
        counter = getattr(b, "count_branch", None)
        if counter is None:
            if isinstance(b.interpretation, uproot.AsDtype) and not b.interpretation.inner_shape:
                flat[b.name] = np.tile(b.array(library="np"), copies)
            continue
        coll = counter.name[1:]
        if counter.name.startswith("n") and b.name.startswith(coll + "_"):
            colls.setdefault(coll, {})[b.name[len(coll) + 1:]] = b.array()
    flat["event"] = np.arange(1, copies * t.num_entries + 1, dtype=np.uint64)
    out = {**flat, **{c: ak.concatenate([ak.zip(f)] * copies) for c, f in colls.items()}}
    os.makedirs(workdir, exist_ok=True)
    with uproot.recreate(path + ".tmp") as f:
        f.mktree("Events", {k: v.type if isinstance(v, ak.Array) else v.dtype for k, v in out.items()},
                 counter_name=lambda c: "n" + c, field_name=lambda outer, inner: f"{outer}_{inner}")
        f["Events"].extend(out)
    os.replace(path + ".tmp", path)
    return path


# -- what coffea brings ------------------------------------------------------------------------------
def footprint() -> dict:
    """The distributions coffea requires (recursively, no extras) and their installed size."""
    import importlib.metadata as md
    import re

    def norm(name):
        return re.sub(r"[-_.]+", "-", name).lower()

    seen, todo = {}, ["coffea"]
    while todo:
        name = norm(todo.pop())
        if name in seen:
            continue
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            continue
        size = 0
        for f in dist.files or []:
            try:
                size += os.path.getsize(dist.locate_file(f))
            except OSError:
                pass
        seen[name] = size
        for req in dist.requires or []:
            if "extra ==" in req:
                continue
            todo.append(re.split(r"[\s;<>=!~\[(]", req.strip(), maxsplit=1)[0])
    return {"distributions": sorted(seen), "size_mb": sum(seen.values()) / 2**20,
            "sizes_mb": {k: v / 2**20 for k, v in seen.items()}}


def installed_here() -> set[str]:
    import importlib.metadata as md
    import re

    return {re.sub(r"[-_.]+", "-", d.metadata["Name"]).lower() for d in md.distributions()}


# -- driver --------------------------------------------------------------------------------------------
def run_worker(python: str, reader: str, fmt: str, path: str, repeat: int) -> dict | str:
    proc = subprocess.run([python, os.path.abspath(__file__), "--worker", reader, "--format", fmt, "--path", path,
                           "--repeat", str(repeat)], capture_output=True, text=True, cwd=REPO)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode or not lines:
        return (proc.stderr.strip().splitlines() or ["no output"])[-1]
    return json.loads(lines[-1][len("RESULT "):])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--coffea-python", default=os.environ.get("COFFEA_PYTHON", sys.executable),
                    help="interpreter of an environment with coffea (default: $COFFEA_PYTHON or this one)")
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--json", help="also write the results to this file")
    ap.add_argument("--copies", type=int, default=500, help="pfnano.root repeated this many times for the "
                    "'nanoaod_xN' row (0: none)")
    ap.add_argument("--workdir", default="/tmp/taggerflow_bench_coffea", help="where the repeated file is made")
    ap.add_argument("--worker", choices=("ours", "coffea"), help=argparse.SUPPRESS)
    ap.add_argument("--format", choices=tuple(FILES), help=argparse.SUPPRESS)
    ap.add_argument("--path", help=argparse.SUPPRESS)
    ap.add_argument("--footprint", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print("RESULT " + json.dumps(worker(args.worker, args.format, args.path, args.repeat)), flush=True)
        return
    if args.footprint:
        print("RESULT " + json.dumps(footprint()), flush=True)
        return

    sys.path.insert(0, os.path.join(REPO, "tests"))
    from coffea_samples import sample

    check = subprocess.run([args.coffea_python, "-c", "import coffea; print(coffea.__version__)"],
                           capture_output=True, text=True)
    coffea_version = check.stdout.strip() if check.returncode == 0 else None
    if coffea_version is None:
        print(f"coffea is NOT importable with {args.coffea_python} "
              f"({(check.stderr.strip().splitlines() or ['?'])[-1]}): only our readers are measured; "
              "pass --coffea-python of an environment with coffea installed")
    else:
        print(f"coffea {coffea_version} from {args.coffea_python}")
    results = {"coffea_version": coffea_version, "repeat": args.repeat, "rows": []}
    print(f"{'input':9} {'reader':7} {'cands':>7} {'consts':>8} {'import s':>9} {'1st open+read s':>15} "
          f"{'open s':>7} {'read s':>7} {'us/cand':>8} {'peak RSS MB':>11}  checksum")
    inputs = [(fmt, fmt, sample(name)) for fmt, name in FILES.items()]
    if args.copies:
        inputs.append((f"nano_x{args.copies}", "nanoaod", scaled_pfnano(sample(FILES["nanoaod"]), args.copies,
                                                                        args.workdir)))
    for label, fmt, path in inputs:
        for reader, python in (("ours", sys.executable), ("coffea", args.coffea_python)):
            if reader == "coffea" and coffea_version is None:
                print(f"{label:9} {reader:7} not measured: coffea not importable")
                continue
            r = run_worker(python, reader, fmt, path, args.repeat)
            if isinstance(r, str):
                print(f"{label:9} {reader:7} FAILED: {r}")
                results["rows"].append({"reader": reader, "input": label, "error": r})
                continue
            r["input"] = label
            results["rows"].append(r)
            print(f"{label:9} {reader:7} {r['candidates']:7d} {r['constituents']:8d} {r['import_s']:9.2f} "
                  f"{r['first_s']:15.3f} {r['open_s']:7.3f} {r['read_s']:7.4f} {r['us_per_candidate']:8.1f} "
                  f"{r['peak_rss_mb']:11.0f}  {r['checksum']:.6g}")
    if coffea_version is not None:
        proc = subprocess.run([args.coffea_python, os.path.abspath(__file__), "--footprint"],
                              capture_output=True, text=True)
        fp = json.loads([ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")][-1][7:])
        missing = sorted(set(fp["distributions"]) - installed_here())
        extra_mb = sum(fp["sizes_mb"][d] for d in missing)
        print(f"coffea brings {len(fp['distributions'])} distributions ({fp['size_mb']:.0f} MB installed); "
              f"{len(missing)} of them ({extra_mb:.0f} MB) are not in this environment: {', '.join(missing)}")
        results["footprint"] = {**fp, "not_in_project_env": missing, "not_in_project_env_mb": extra_mb}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1, sort_keys=True)


if __name__ == "__main__":
    main()
