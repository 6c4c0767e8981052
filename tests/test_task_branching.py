"""Branch maps of the law tasks built from the configuration alone (no input file is read)."""

from __future__ import annotations

import pytest

from tests.conftest import tiny_raw, write_config


@pytest.fixture
def config_path(tmp_path, monkeypatch):
    monkeypatch.setenv("TAGGERFLOW_DATA", str(tmp_path / "data"))
    raw = tiny_raw()
    raw["resampling"]["n_jobs"] = 7
    return write_config(raw, tmp_path)


def test_feature_scaling_n_jobs_spreads_shards_evenly(config_path):
    from tasks.scaling import FeatureScaling

    shards = FeatureScaling(version="t", config=config_path, files_per_job=1).get_branch_map()
    assert len(shards) == 7
    for n_jobs, sizes in ((3, [2, 2, 3]), (7, [1] * 7), (20, [1] * 7)):
        bmap = FeatureScaling(version="t", config=config_path, n_jobs=n_jobs).get_branch_map()
        assert [len(bmap[b]) for b in sorted(bmap)] == sizes
        # every shard in exactly one branch, in job order
        assert [p for b in sorted(bmap) for p in bmap[b]] == [shards[b][0] for b in sorted(shards)]


def test_feature_scaling_files_per_job_and_output_dirs(config_path):
    from tasks.scaling import FeatureScaling

    bmap = FeatureScaling(version="t", config=config_path, files_per_job=3).get_branch_map()
    assert [len(bmap[b]) for b in sorted(bmap)] == [3, 3, 1]
    by_files = FeatureScaling(version="t", config=config_path, files_per_job=3, branch=0).output().path
    by_jobs = FeatureScaling(version="t", config=config_path, n_jobs=3, branch=0).output().path
    assert "files_per_job_3" in by_files and "n_jobs_3" in by_jobs and by_files != by_jobs


def test_demo_input_paths_match_the_demo_outputs(config_path):
    from tasks.demo import GenerateDemoSamples, input_files
    from tasks.spectrum import Spectrum

    spectrum = Spectrum(version="t", config=config_path)
    files = input_files(spectrum)
    demo = GenerateDemoSamples(version="t", config=config_path)
    expected = [demo.req(demo, branch=b).output().path for b in sorted(demo.get_branch_map())]
    assert [p for _, p in files] == expected
    assert [ds for ds, _ in files] == ["DY", "TT", "WJets", "QCD"]


def test_convert_lwtnn_sequence_names_change_the_output_directory(config_path):
    from tasks.training import CheckExport, ConvertLwtnn

    plain = ConvertLwtnn(version="t", config=config_path, branch=0).output()["lwtnn"].path
    named = ConvertLwtnn(version="t", config=config_path, branch=0,
                         sequence_names=("pfcand=tracks_r22default_sd0sort",)).output()["lwtnn"].path
    assert plain != named and "seqnames_pfcand-tracks_r22default_sd0sort" in named
    check = CheckExport(version="t", config=config_path, branch=0, sequence_names=("pfcand=tracks",))
    assert check.requires()["export"].sequence_names == ("pfcand=tracks",)
