"""Connecting to Temporal the one way every part does: the SDK's environment configuration
(TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE, TEMPORAL_API_KEY, TLS variables, profiles) and pydantic payloads."""

from __future__ import annotations

from collections.abc import Mapping

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.envconfig import ClientConfig
from temporalio.runtime import Runtime


def connect_config(env: Mapping[str, str] | None = None) -> dict:
    config = dict(ClientConfig.load_client_connect_config(override_env_vars=env))
    config.setdefault("target_host", "127.0.0.1:7233")
    config.setdefault("namespace", "default")
    return config


async def connect(env: Mapping[str, str] | None = None, runtime: Runtime | None = None) -> Client:
    config = connect_config(env)
    return await Client.connect(**config, data_converter=pydantic_data_converter, runtime=runtime)
