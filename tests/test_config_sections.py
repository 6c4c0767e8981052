"""Each task's configuration sections: its own plus those of the tasks it requires, derived from
its requires()/workflow_requires() (workflows.base.required_task_classes)."""

from __future__ import annotations

import law

from conftest import DEFAULT_CONFIG
from taggerflow.trainsample import TRAIN_SAMPLE_SECTIONS


def _flat(struct) -> list:
    return [t for t in law.util.flatten(struct) if isinstance(t, law.Task)]


def test_required_task_classes_cover_real_requirements():
    """For every task of the demo Pipeline (workflows and a branch of each): every task its
    requires() and workflow_requires() return is of a class required_task_classes names."""
    from tasks.evaluation import Pipeline
    from workflows.base import Task, required_task_classes

    seen, todo, checked = set(), [Pipeline(version="t", config=DEFAULT_CONFIG)], 0
    while todo:
        task = todo.pop()
        if task.task_id in seen or not isinstance(task, Task):
            continue
        seen.add(task.task_id)
        instances = [task]
        if isinstance(task, law.BaseWorkflow) and not task.is_branch():
            instances.append(task.req(task, branch=min(task.get_branch_map())))
        for inst in instances:
            reqs = _flat(inst.requires())
            if isinstance(inst, law.BaseWorkflow) and not inst.is_branch():
                reqs += _flat(inst.workflow_requires())
            declared = set(required_task_classes(type(inst))) | {type(inst)}
            for r in reqs:
                if isinstance(r, Task):
                    assert type(r) in declared, (type(inst).__name__, type(r).__name__)
                    checked += 1
                    todo.append(r)
    assert checked > 10


def test_sections_are_the_union_over_required_tasks():
    from tasks.evaluation import Evaluation, Pipeline
    from tasks.spectrum import Spectrum
    from tasks.training import ConvertLwtnn, Training

    assert set(Spectrum.all_config_sections()) == {"demo", "inputs", "classes", "spectrum"}
    assert set(Training.all_config_sections()) == {"demo", "inputs", "classes", "spectrum", "resampling",
                                                   "features", "scaling", "train_sample", "records",
                                                   "training", "control"}
    assert set(Pipeline.all_config_sections()) == set(Evaluation.all_config_sections()) | \
        set(ConvertLwtnn.all_config_sections())
    assert "evaluation" not in ConvertLwtnn.all_config_sections()


def test_training_file_hash_has_the_sections_of_its_task():
    # the training files' config_hash attribute (taggerflow.trainsample.train_sample_hash) covers
    # what the output path of WriteTrainSample covers
    from tasks.trainsample import WriteTrainSample

    assert set(TRAIN_SAMPLE_SECTIONS) == {"name", "seed"} | set(WriteTrainSample.all_config_sections())
