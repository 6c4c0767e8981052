"""workflows.law_compat against the law and luigi installed: fails loudly when law changes.

The fast paths (parameter resolution, req's common parameters, a workflow's attribute lookup) must
give what law's and luigi's own give, on the project's real task classes, and every private name
of law they (or the batch workflows) use must exist with the signature called.
"""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
import tomllib

import law
import law.task.proxy
import luigi
import pytest
from conftest import REPO, tiny_raw, write_config

from workflows import law_compat

law.contrib.load("htcondor", "slurm")


def _params(func) -> list[str]:
    return list(inspect.signature(func).parameters)


# -- versions ---------------------------------------------------------------------------------------

def test_installed_law_and_luigi_are_the_tested_ones_and_pyproject_pins_them():
    assert law_compat.check_versions(law_compat.installed_versions()) == []
    with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
        deps = tomllib.load(f)["project"]["dependencies"]
    for name in ("law", "luigi"):
        low, high = law_compat.SUPPORTED[name]
        pin = f"{name}>={'.'.join(map(str, low))},<{'.'.join(map(str, high))}"
        assert [d for d in deps if d.split(">")[0].split("<")[0].split("=")[0] == name] == [pin]


@pytest.mark.parametrize("name, version", [("law", "0.1.22"), ("law", "0.1.20"), ("law", "0.1.22.dev1"),
                                           ("law", "0.2.0"), ("luigi", "3.9.0"), ("luigi", "3.8.0")])
def test_untested_version_is_refused_with_both_versions(name, version):
    with pytest.raises(law_compat.UnsupportedVersionError) as info:
        law_compat.check_versions({name: version})
    low, high = law_compat.SUPPORTED[name]
    message = str(info.value)
    assert "\n" not in message
    assert f"{name} {version} installed" in message
    assert f"{name}>={'.'.join(map(str, low))},<{'.'.join(map(str, high))}" in message
    assert law_compat.OVERRIDE_ENV in message
    assert law_compat.check_versions({name: version}, allow_untested=True) == [message.split(" (set ")[0]]


@pytest.mark.parametrize("version", ["0.1.21", "0.1.21.post1"])
def test_tested_versions_pass(version):
    assert law_compat.check_versions({"law": version, "luigi": "3.8.1"}) == []


def _import_with_law_version(version: str, override: str | None):
    code = f"import law; law.__version__ = {version!r}; import workflows.remote; print('imported')"
    env = {k: v for k, v in os.environ.items() if k != law_compat.OVERRIDE_ENV}
    if override is not None:
        env[law_compat.OVERRIDE_ENV] = override
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, env=dict(env, PYTHONPATH=REPO),
                          capture_output=True, text=True, timeout=120)


def test_a_newer_law_ends_the_import_with_one_line_unless_overridden():
    proc = _import_with_law_version("0.1.23", None)
    assert proc.returncode != 0 and "imported" not in proc.stdout
    last = proc.stderr.strip().splitlines()[-1]
    assert last == ("workflows.law_compat.UnsupportedVersionError: law 0.1.23 installed, taggerflow is tested "
                    f"with law>=0.1.21,<0.1.22 (set {law_compat.OVERRIDE_ENV}=1 to try it anyway)")

    proc = _import_with_law_version("0.1.23", "1")
    assert proc.returncode == 0 and proc.stdout.strip() == "imported", proc.stderr
    assert (f"taggerflow: warning: law 0.1.23 installed, taggerflow is tested with law>=0.1.21,<0.1.22 "
            f"({law_compat.OVERRIDE_ENV} is set)") in proc.stderr.splitlines()


# -- private names of law used, with the signatures called ----------------------------------------

def test_private_law_names_exist_with_the_signatures_called():
    from law.contrib.htcondor.workflow import HTCondorWorkflowProxy
    from law.contrib.slurm.workflow import SlurmWorkflowProxy
    from law.workflow.remote import BaseRemoteWorkflowProxy, JobData

    forwarded = law.task.proxy._forward_workflow_attributes | law.task.proxy._forward_sandbox_attributes
    assert all(isinstance(a, str) for a in forwarded) and {"output", "run", "requires", "complete"} <= forwarded
    assert law_compat.PROXIED_ATTRIBUTES == forwarded | {"_proxy_attribute_task_init"}
    # the proxy lookup consults these two sets and nothing else
    names = law.task.proxy.get_proxy_attribute.__code__.co_names
    assert "_forward_workflow_attributes" in names and "_forward_sandbox_attributes" in names
    assert not [n for n in names if n.startswith("_forward_") and n not in
                ("_forward_workflow_attributes", "_forward_sandbox_attributes")]
    assert _params(law.task.proxy.ProxyAttributeTask.__getattribute__) == ["self", "attr", "proxy"]

    # hooks of law's remote workflow proxy that workflows.batch/htcondor call or override
    assert _params(BaseRemoteWorkflowProxy._setup_job_manager) == ["self"]
    assert _params(BaseRemoteWorkflowProxy._get_job_kwargs) == ["self", "name"]
    assert _params(BaseRemoteWorkflowProxy._status_error_pairs) == ["self", "job_num", "job_data"]
    assert _params(BaseRemoteWorkflowProxy.create_job_file_factory)[0] == "self"
    assert _params(HTCondorWorkflowProxy.create_job_file) == ["self", "args"]
    assert _params(SlurmWorkflowProxy.create_job_file) == ["self", "job_num", "branches"]
    assert JobData.dummy_job_id == "dummy_job_id"
    # workflows.collection overrides the existence check of law's FileCollection
    assert _params(law.FileCollection._iter_state) == ["self", "existing", "optional_existing", "keys", "unpack",
                                                       "exists_func"]

    # parameter handling: law's req_params (its keywords) and luigi's resolution
    assert _params(law.task.base.BaseTask.req_params.__func__) == [
        "cls", "inst", "_exclude", "_prefer_cli", "_skip_task_excludes", "_skip_task_excludes_get",
        "_skip_task_excludes_set", "kwargs"]
    assert _params(law.Task.req_params.__func__) == ["cls", "inst", "_exclude", "_prefer_cli", "kwargs"]
    assert _params(luigi.Parameter.has_task_value) == ["self", "task_name", "param_name"]
    assert _params(luigi.Parameter.task_value) == ["self", "task_name", "param_name"]
    assert _params(luigi.Task.get_param_values.__func__) == ["cls", "params", "args", "kwargs"]
    assert callable(luigi.cmdline_parser.CmdlineParser.get_instance)
    assert _params(luigi.task_register.Register._get_reg.__func__) == ["cls"]
    assert luigi.task_register.Register.AMBIGUOUS_CLASS is not None


def test_task_classes_are_luigis_registry():
    project = _task_classes()  # imported (registered) first
    classes = law_compat.task_classes()
    for cls in project:
        assert classes[cls.get_task_family()] is cls
        assert luigi.task_register.Register.get_task_cls(cls.get_task_family()) is cls
    assert all(isinstance(c, type) and issubclass(c, luigi.Task) for c in classes.values())
    assert set(classes) <= set(luigi.task_register.Register.task_names())


# -- the fast paths against law's and luigi's own, on real task classes ------------------------------

@pytest.fixture
def config_path(tmp_path, monkeypatch):
    monkeypatch.setenv("TAGGERFLOW_DATA", str(tmp_path / "data"))
    return write_config(tiny_raw(), tmp_path)


def _task_classes():
    from tasks.demo import GenerateDemoSamples
    from tasks.evaluation import Evaluation, Pipeline
    from tasks.scaling import FeatureScaling, MergeScaling
    from tasks.spectrum import Spectrum
    from tasks.training import ConvertLwtnn, Training

    return [GenerateDemoSamples, Spectrum, FeatureScaling, MergeScaling, Training, ConvertLwtnn, Evaluation,
            Pipeline]


def _law_get_param_values(cls, params, args, kwargs):
    # the chain below workflows.base.Task: law's BaseTask, then luigi's resolution
    from workflows.base import Task

    return super(Task, cls).get_param_values(params, args, kwargs)


def test_get_params_is_luigis():
    for cls in _task_classes():
        assert cls.get_params() == luigi.Task.get_params.__func__(cls)


def _compare_param_values(classes, config_path):
    checked = 0
    for cls in classes:
        params = cls.get_params()
        kwargs = {"version": "v", "config": config_path}
        ours = cls.get_param_values(params, [], dict(kwargs))
        assert ours == _law_get_param_values(cls, params, [], dict(kwargs)), cls
        assert cls.get_param_values(params, [], dict(kwargs)) == ours  # a second time, from the cache
        checked += len(ours)
    return checked


def test_parameter_values_outside_of_a_command_line_are_luigis(config_path):
    assert luigi.cmdline_parser.CmdlineParser.get_instance() is None
    assert _compare_param_values(_task_classes(), config_path) > 100


@pytest.fixture
def luigi_config():
    """Values in luigi's configuration ([<Task>] <param>), removed afterwards."""
    config = luigi.configuration.get_config()
    added = []

    def set_value(section, option, value):
        if not config.has_section(section):
            config.add_section(section)
            added.append((section, None))
        else:
            added.append((section, option))
        config.set(section, option, value)

    yield set_value
    for section, option in reversed(added):
        if option is None:
            config.remove_section(section)
        else:
            config.remove_option(section, option)


def test_parameter_values_from_command_line_config_and_default_are_luigis(config_path, luigi_config):
    from tasks.demo import GenerateDemoSamples
    from tasks.spectrum import Spectrum

    luigi_config("Spectrum", "htcondor_gpus", "2")
    luigi_config("GenerateDemoSamples", "slurm_partition", "short")
    classes = _task_classes()
    for memory, cpus in (("4000", "3"), ("5000", "5")):  # a new context never reuses the last one's values
        args = ["Spectrum", "--version", "v", "--config", config_path, "--workflow", "htcondor",
                "--Spectrum-htcondor-memory", memory, "--GenerateDemoSamples-htcondor-cpus", cpus,
                "--Training-htcondor-runtime", "7h"]
        with luigi.cmdline_parser.CmdlineParser.global_instance(args) as parser:
            assert _compare_param_values(classes, config_path) > 100
            spectrum = dict(Spectrum.get_param_values(Spectrum.get_params(), [], {"version": "v"}))
            demo = dict(GenerateDemoSamples.get_param_values(GenerateDemoSamples.get_params(), [], {"version": "v"}))
            # the values came from where they were set: command line (--<Task>-<param>), luigi's
            # configuration, defaults; the root task's own flags (--workflow) only reach the root task
            assert (spectrum["htcondor_memory"], spectrum["htcondor_gpus"], spectrum["workflow"]) == \
                (float(memory), 2, "local")
            assert (demo["htcondor_cpus"], demo["slurm_partition"], demo["htcondor_memory"]) == \
                (int(cpus), "short", Spectrum.htcondor_memory._default)
            root = parser.get_task_obj()
            assert (root.workflow, root.htcondor_memory, root.htcondor_gpus) == ("htcondor", float(memory), 2)


def _instances(config_path):
    from tasks.demo import GenerateDemoSamples
    from tasks.scaling import FeatureScaling, MergeScaling
    from tasks.spectrum import Spectrum

    spectrum = Spectrum(version="v", config=config_path, workflow="htcondor", htcondor_memory=4000.0)
    scaling = FeatureScaling(version="v", config=config_path, workflow="slurm", slurm_gpus=1, n_jobs=2)
    merge = MergeScaling(version="v", config=config_path, workflow="htcondor")
    return [(spectrum, GenerateDemoSamples), (spectrum.req(spectrum, branch=0), GenerateDemoSamples),
            (scaling, Spectrum), (scaling.req(scaling, branch=1), Spectrum), (merge, FeatureScaling),
            (spectrum, MergeScaling)]


REQ_VARIANTS = [
    {},
    {"_exclude": {"htcondor_cpus", "version"}},
    {"_exclude": "htcondor_*"},
    {"_exclude": ["^slurm_.*$", "branch"]},
    {"_exclude": {"workflow"}, "_skip_task_excludes": True},
    {"_skip_task_excludes_get": True},
    {"_skip_task_excludes_set": True, "branch": 0},
    {"_prefer_cli": {"htcondor_memory"}},
    {"htcondor_memory": 1000.0, "_exclude": {"htcondor_memory"}},
]


def test_common_params_and_req_params_are_laws(config_path):
    from workflows.base import Task

    compared = 0
    for inst, cls in _instances(config_path):
        common = law_compat.common_task_params(inst, cls)
        assert common == law.util.common_task_params(inst, cls)
        assert list(common) == list(law.util.common_task_params(inst, cls))
        for variant in REQ_VARIANTS:
            ours = cls.req_params(inst, **variant)
            laws = super(Task, cls).req_params(inst, **variant)
            assert ours == laws, (inst.task_id, cls.__name__, variant)
            compared += len(ours)
    assert compared > 200


def test_workflow_attribute_lookup_is_laws(config_path):
    from tasks.spectrum import Spectrum

    law_lookup = law.task.proxy.ProxyAttributeTask.__getattribute__
    for kind in ("local", "htcondor", "slurm"):
        workflow = Spectrum(version="v", config=config_path, workflow=kind)
        branch = Spectrum.req(workflow, branch=0)
        for task in (workflow, branch):
            names = sorted(set(dir(task)) - {"_cache_branches", "param_args"})  # deprecated, warn
            assert len(names) > 300
            for name in names:
                try:
                    ours = ("value", law_compat.workflow_getattribute(task, name))
                except Exception as e:
                    ours = ("raises", type(e))
                try:
                    laws = ("value", law_lookup(task, name))
                except Exception as e:
                    laws = ("raises", type(e))
                assert ours[0] == laws[0] and (ours[1] is laws[1] or ours[1] == laws[1]), (kind, name)
        # the forwarded attributes of a workflow are its proxy's, of a branch its own
        assert workflow.output.__self__ is workflow.workflow_proxy
        assert type(workflow.workflow_proxy).workflow_type == kind
        assert branch.output.__self__ is branch


def test_branch_from_its_workflow_knows_it_as_laws_req_branch(config_path):
    from tasks.spectrum import Spectrum

    workflow = Spectrum(version="v", config=config_path, workflow="htcondor")
    branch = Spectrum.req(workflow, branch=1)
    assert branch.as_workflow() is workflow
    # law's own way: a branch created alone creates its workflow; the same task either way
    alone = Spectrum(version="v", config=config_path, workflow="htcondor", branch=1)
    assert alone.task_id == branch.task_id and alone.as_workflow().task_id == workflow.task_id
    via_law = workflow.req_branch(1)
    assert via_law.as_workflow() is workflow
