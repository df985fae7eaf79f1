"""The Slack Web API client that the worker's Slack activities and the Slack bridge both use.

`make_web_client` is a `slack_sdk.WebClient` with connection-error retries and a bounded 429 handler:
a short `Retry-After` (<= `max_rate_limit_wait` s) is slept inside the call, a longer one is left to the
caller (the activities hand it to Temporal as `next_retry_delay`, read with `retry_after_seconds`).
"""

from __future__ import annotations

from typing import Any

from slack_sdk import WebClient
from slack_sdk.http_retry import (
    ConnectionErrorRetryHandler,
    HttpRequest,
    HttpResponse,
    RateLimitErrorRetryHandler,
)
from slack_sdk.http_retry.state import RetryState

DEFAULT_API_URL = "https://slack.com/api/"


def retry_after_seconds(headers: Any) -> int | None:
    """The `Retry-After` header in whole seconds (any case, str or [str] values), or None."""
    if not headers:
        return None
    for key, value in dict(headers).items():
        if str(key).lower() == "retry-after":
            if isinstance(value, list | tuple):
                value = value[0] if value else None
            try:
                return max(0, int(float(str(value))))
            except (TypeError, ValueError):
                return None
    return None


class BoundedRateLimitRetryHandler(RateLimitErrorRetryHandler):
    """slack_sdk's 429 handler (sleeps Retry-After, then retries), but only for short waits.

    A longer `Retry-After` is left to Temporal (`next_retry_delay`), so an activity never sleeps past
    its start-to-close timeout.
    """

    def __init__(self, max_retry_count: int = 2, max_wait_seconds: float = 5.0) -> None:
        super().__init__(max_retry_count=max_retry_count)
        self.max_wait_seconds = max_wait_seconds

    def _can_retry(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> bool:
        if not super()._can_retry(state=state, request=request, response=response, error=error):
            return False
        assert response is not None
        wait = retry_after_seconds(response.headers)
        return wait is not None and wait <= self.max_wait_seconds


def make_web_client(
    token: str,
    base_url: str = DEFAULT_API_URL,
    *,
    timeout: int = 10,
    rate_limit_retries: int = 2,
    max_rate_limit_wait: float = 5.0,
    connection_retries: int = 2,
) -> WebClient:
    """A WebClient with 429 and connection-error retries inside each call: the worker's shared one, and the
    Slack bridge's."""
    return WebClient(
        token=token,
        base_url=base_url,
        timeout=timeout,
        retry_handlers=[
            ConnectionErrorRetryHandler(max_retry_count=connection_retries),
            BoundedRateLimitRetryHandler(
                max_retry_count=rate_limit_retries, max_wait_seconds=max_rate_limit_wait
            ),
        ],
    )
