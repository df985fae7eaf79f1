"""The custom search attributes (SPEC §6) that make every deploy findable in the Web UI and by `list`."""

from __future__ import annotations

from temporalio.common import SearchAttributeKey

SERVICE = SearchAttributeKey.for_keyword("DeployService")
ENVIRONMENT = SearchAttributeKey.for_keyword("DeployEnvironment")
CLOUD = SearchAttributeKey.for_keyword("DeployCloud")
STEP = SearchAttributeKey.for_keyword("DeployStep")
OUTCOME = SearchAttributeKey.for_keyword("DeployOutcome")
WAITING_ON = SearchAttributeKey.for_keyword_list("DeployWaitingOn")

ALL = (SERVICE, ENVIRONMENT, CLOUD, STEP, OUTCOME, WAITING_ON)
