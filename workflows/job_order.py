"""The workflow runner deployctl's workers use: each job of an activation runs on its own (docs/replay.md).

The defect it defends against (temporalio 1.35.0, tests/test_wedge.py): a worker that answers a legacy
`status` query applies the history events no workflow task has processed yet (say an activity's
completion) to its cached run, in an activation of their own, and the workflow runs on; the next workflow
task brings an Update, and the commands it sends are those of the completion, then those of the Update.
Replay puts both jobs in one activation, and the Python SDK runs Signals and Updates before everything
else in an activation, so it expects the Update's commands first: the history no longer replays and the
deploy is stuck. Two activity completions split over two activations did the same.

Every way the live path splits one workflow task's jobs over several activations (a legacy query's early
events, then the task's own jobs) puts history events' jobs first and the task's Updates last, while
replay hands them over in one activation, Updates first (sdk-core orders them so, and so does the SDK). So
`OneJobAtATime` handles the jobs of any activation one by one, in one fixed order, running the workflow's
coroutines after each as if each had come in an activation of its own: the jobs of history events in the
order sdk-core gives them (the order of their events), then the Updates. Cut that order anywhere and the
commands are the same, so a split task and the same task replayed whole issue the same commands. Each job
goes to the SDK's own `activate` as a one-job activation and their commands are joined. Patches and
random-seed updates go with the first job (they belong to the whole task); the first activation
(`initialize_workflow`), query-only activations and evictions are left as they are.

It changes the order in which jobs of one activation are seen (a Signal after an activity result that came
in the same task is now handled after it, not before), for live runs and replay alike, so it is on or off
for every worker of a task queue at once, and histories recorded with it replay only with it
(`tests/test_replay.py` uses it). `DEPLOYCTL_ONE_JOB_PER_ACTIVATION=0` switches it off, for an SDK that
fixes the defect (docs/replay.md: "Checking a newer SDK release").

It subclasses the SDK's private `_WorkflowInstanceImpl`: pyproject.toml pins temporalio, and
`tests/test_wedge.py` fails if a new release changes what this relies on.
"""

from __future__ import annotations

from temporalio.bridge.proto.workflow_activation import WorkflowActivation, WorkflowActivationJob
from temporalio.bridge.proto.workflow_completion import WorkflowActivationCompletion
from temporalio.worker import UnsandboxedWorkflowRunner, WorkflowInstance, WorkflowInstanceDetails
from temporalio.worker._workflow_instance import _WorkflowInstanceImpl

# Jobs that belong to the whole workflow task rather than to one event: they go with the first job.
_TASK_WIDE = ("notify_has_patch", "update_random_seed")
# Activations left whole: the first one, evictions, and queries (which never share an activation).
_WHOLE = ("initialize_workflow", "remove_from_cache", "query_workflow")


def pieces(jobs: list[WorkflowActivationJob]) -> list[list[WorkflowActivationJob]]:
    """The one-job activations `jobs` is handled as, in order (one piece: handled as it is): the jobs of
    history events in sdk-core's order, then the Updates."""
    kinds = [(job, job.WhichOneof("variant")) for job in jobs]
    if any(kind in _WHOLE for _, kind in kinds):
        return [jobs]
    wide = [job for job, kind in kinds if kind in _TASK_WIDE]
    events = [job for job, kind in kinds if kind not in _TASK_WIDE and kind != "do_update"]
    each = events + [job for job, kind in kinds if kind == "do_update"]
    if len(each) <= 1:
        return [jobs]
    return [wide + each[:1], *([job] for job in each[1:])]


class _OneJobAtATimeInstance(_WorkflowInstanceImpl):  # type: ignore[misc]
    def activate(self, act: WorkflowActivation) -> WorkflowActivationCompletion:
        parts = pieces(list(act.jobs))
        if len(parts) == 1:
            return super().activate(act)
        joined = WorkflowActivationCompletion(run_id=act.run_id)
        joined.successful.SetInParent()
        flags: list[int] = []
        for jobs in parts:
            one = WorkflowActivation()
            one.CopyFrom(act)
            del one.jobs[:]
            one.jobs.extend(jobs)
            done = super().activate(one)
            if done.HasField("failed"):
                return done  # the whole task fails, and is retried from the full history
            joined.successful.commands.extend(done.successful.commands)
            flags.extend(f for f in done.successful.used_internal_flags if f not in flags)
            if done.successful.versioning_behavior:
                joined.successful.versioning_behavior = done.successful.versioning_behavior
        joined.successful.used_internal_flags.extend(flags)
        return joined


class OneJobAtATime(UnsandboxedWorkflowRunner):
    """The SDK's runner, with each job of an activation handled on its own (the module docstring).
    Used as the sandbox's `runner_class`: the sandbox imports it by name, so it lives at module level."""

    def create_instance(self, det: WorkflowInstanceDetails) -> WorkflowInstance:
        return _OneJobAtATimeInstance(det)  # type: ignore[abstract]  # as the SDK's own runner does
