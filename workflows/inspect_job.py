"""A short workflow the CLI runs before `start`: read the Jenkins job's parameters through the worker.

The CLI does no I/O on Jenkins itself (and holds no Jenkins token); it asks the worker pool, then checks
the params file against the answer with the same policy function the deploy workflow uses.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from activities.jenkins import JenkinsActivities
    from workflows.models import JobParametersInput, JobParametersResult


# The person at the CLI is waiting: retry briefly, then say what went wrong.
INSPECT_CALL: dict[str, Any] = {
    "start_to_close_timeout": timedelta(seconds=20),
    "schedule_to_close_timeout": timedelta(seconds=45),
    "retry_policy": RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=5)),
}


@workflow.defn(name="InspectJob")
class InspectJobWorkflow:
    @workflow.run
    async def run(self, input: JobParametersInput) -> JobParametersResult:
        return await workflow.execute_activity_method(
            JenkinsActivities.job_parameters,
            input,
            summary=f"read the parameters of {input.job}",
            **INSPECT_CALL,
        )
