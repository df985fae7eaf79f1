"""The rules of a deploy, read from the worker pool's own config file (SPEC §9).

A start carries only the caller's intent; who approves, which job runs, which repos are written and
whose keys sign come from here. The file is read again on every call (a workflow calls when it starts
and when each step opens), so a roster or key change reaches running deploys at their next step, and
the sha256 of the bytes read goes into the deploy's audit trail. It is parsed and validated again only when
those bytes (or an environment override) changed (`ConfigReader`).
"""

from __future__ import annotations

import asyncio
import logging

from temporalio import activity
from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest
from temporalio.client import Client
from temporalio.exceptions import ApplicationError

from activities.github import GithubActivities
from starter.config import ConfigError, ConfigReader
from workflows import search_attributes as sa
from workflows.models import Rules, RulesInput

log = logging.getLogger("deployctl.rules")


class RulesActivities:
    def __init__(self, client: Client, config_path: str, github: GithubActivities | None) -> None:
        self._client = client
        self._path = config_path
        self._reader = ConfigReader(config_path)  # read at every call, parsed only when it changed
        self._github = github
        self._indexed: bool | None = None  # whether the namespace has deployctl's search attributes

    @activity.defn
    async def load_rules(self, input: RulesInput) -> Rules:
        """The workers' rules for one deploy. A file that no longer loads is retried (the deploy says so in
        its status and thread until an operator fixes it); it never falls back to anything else."""
        try:
            config = self._reader.load()
        except ConfigError as err:
            raise ApplicationError(f"the workers' config does not load: {err}", type="ConfigError") from None
        rules = config.rules(
            input.service, input.environment, namespace=activity.info().workflow_namespace or "default"
        )
        indexed = await self._search_attributes()
        rules.settings = rules.settings.model_copy(update={"search_attributes": indexed})
        notes: list[str] = []
        people = dict(rules.people)
        for uid, person in sorted(people.items()):
            if not person.github_login or self._github is None:
                continue
            try:
                found = await asyncio.to_thread(self._github.signing_keys, person.github_login)
            except Exception as err:  # GitHub down: the config's own keys still count; say so
                notes.append(f"could not read GitHub signing keys of {person.github_login} ({uid}): {err}")
                continue
            keys = tuple(dict.fromkeys((*person.ssh_keys, *found)))
            people[uid] = person.model_copy(update={"ssh_keys": keys})
        return rules.model_copy(update={"people": people, "notes": notes})

    async def _search_attributes(self) -> bool:
        if self._indexed is None:
            try:
                have = await self._client.operator_service.list_search_attributes(
                    ListSearchAttributesRequest(namespace=activity.info().workflow_namespace or "default")
                )
                self._indexed = all(k.name in have.custom_attributes for k in sa.ALL)
            except Exception as err:  # the time-skipping server has no operator service
                log.info("search attributes unavailable (%s): deploys will not upsert them", err)
                self._indexed = False
        return self._indexed
