"""workflows/job_order.py: which one-job activations an activation is handled as (the order is the defence)."""

from __future__ import annotations

from temporalio.bridge.proto.workflow_activation import WorkflowActivationJob

from workflows.job_order import pieces


def job(kind: str, seq: int = 0) -> WorkflowActivationJob:
    j = WorkflowActivationJob()
    if kind == "update":
        j.do_update.id = f"u{seq}"
    elif kind == "resolve":
        j.resolve_activity.seq = seq
    elif kind == "signal":
        j.signal_workflow.signal_name = f"s{seq}"
    elif kind == "timer":
        j.fire_timer.seq = seq
    elif kind == "patch":
        j.notify_has_patch.patch_id = f"p{seq}"
    elif kind == "seed":
        j.update_random_seed.randomness_seed = seq
    elif kind == "init":
        j.initialize_workflow.workflow_type = "Deploy"
    elif kind == "query":
        j.query_workflow.query_id = f"q{seq}"
    elif kind == "evict":
        j.remove_from_cache.message = "bye"
    return j


def names(parts: list[list[WorkflowActivationJob]]) -> list[list[str]]:
    return [[j.WhichOneof("variant") or "" for j in p] for p in parts]


def test_history_events_one_by_one_in_their_order_then_updates():
    jobs = [job("update", 1), job("resolve", 1), job("signal", 1), job("update", 2), job("timer", 1)]
    parts = pieces(jobs)
    assert names(parts) == [
        ["resolve_activity"],
        ["signal_workflow"],
        ["fire_timer"],
        ["do_update"],
        ["do_update"],
    ]
    assert [p[0].do_update.id for p in parts[3:]] == ["u1", "u2"]  # Updates keep their own order


def test_any_cut_of_the_order_gives_the_same_pieces():
    """What the defence rests on: a task whose jobs the live path split (a legacy query's early events,
    then the task's own) is handled in the same pieces as the same jobs in one activation on replay."""
    early, late = [job("resolve", 1), job("signal", 1)], [job("resolve", 2), job("update", 1)]
    whole = pieces([job("update", 1), *early, job("resolve", 2)])  # replay: sdk-core puts the Update first
    split = pieces(early) + pieces(late)
    assert names(whole) == names(split)


def test_task_wide_jobs_go_with_the_first_piece():
    parts = pieces([job("patch", 1), job("update", 1), job("resolve", 1), job("seed", 7)])
    assert names(parts) == [["notify_has_patch", "update_random_seed", "resolve_activity"], ["do_update"]]


def test_activations_left_whole():
    for jobs in (
        [job("init"), job("update", 1)],  # the first task, with the start's Update
        [job("query", 1), job("query", 2)],
        [job("evict")],
        [job("resolve", 1)],
        [job("patch", 1), job("resolve", 1)],
    ):
        assert pieces(jobs) == [jobs]
