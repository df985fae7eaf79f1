"""The Slack bridge's HTTP front (starter/http_front.py): Starlette on uvicorn, on 127.0.0.1.

Real servers, real clients (httpx, raw sockets); the Bolt app is the bridge's own, against the Slack fake.
These tests need no Temporal server: the bridge's Temporal factory here only counts its calls and fails,
which is how a test sees whether a request reached the Temporal side at all.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from temporalio.client import Client

from starter import http_front
from starter.http_front import (
    EVENTS_PATH,
    MAX_BODY,
    READ_TIMEOUT,
    HttpFront,
    Limits,
    make_asgi_app,
    make_front,
)
from starter.simulators.slack import FakeSlack, sign_request
from starter.slack_api import make_web_client
from starter.slack_bridge import BridgeApp, create_app
from tests.conftest import GATE1, SLACK_TOKEN, Deployment, eventually
from tests.test_slack_bridge import SIGNING_SECRET, click_payload, form, slash_body
from workflows.models import Action, Step
from workflows.slack_blocks import action_blocks


@dataclass
class Front:
    front: HttpFront
    app: BridgeApp
    temporal_calls: list[float]  # when the bridge asked for a Temporal client (it never gets one here)

    @property
    def port(self) -> int:
        return self.front.port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture
def make(deployment: Deployment, slack: FakeSlack) -> Iterator[Callable[..., Front]]:
    started: list[Front] = []

    def make_one(**limits: float) -> Front:
        calls: list[float] = []

        async def no_temporal() -> Client:
            calls.append(time.monotonic())
            raise ConnectionRefusedError("no Temporal in this test")

        web = make_web_client(SLACK_TOKEN, slack.url)
        app = create_app(deployment.config, no_temporal, web, SIGNING_SECRET)
        front = make_front(app, "127.0.0.1", 0, limits=Limits(**limits))  # type: ignore[arg-type]
        front.start()
        started.append(Front(front, app, calls))
        return started[-1]

    yield make_one
    for f in started:
        f.front.stop()
        f.app.close()


def head(length: int | None, path: str = EVENTS_PATH, extra: str = "") -> bytes:
    cl = f"Content-Length: {length}\r\n" if length is not None else ""
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        f"{cl}{extra}\r\n"
    ).encode()


def read_to_close(s: socket.socket) -> bytes:
    got = b""
    try:
        while chunk := s.recv(65536):
            got += chunk
    except ConnectionResetError:  # closed with our bytes unread: closed all the same
        pass
    return got


def exchange(port: int, data: bytes, wait: float = 8.0) -> tuple[bytes, float]:
    """Send `data`, then read until the server closes the connection: what came back and how long it took
    (socket.timeout after `wait` seconds if the server never closes it)."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as s:
        s.sendall(data)
        started = time.monotonic()
        return read_to_close(s), time.monotonic() - started


def read_response(s: socket.socket) -> bytes:
    """One whole response (its head, then Content-Length bytes of body) from a kept-alive connection."""
    got = b""
    while b"\r\n\r\n" not in got:
        got += s.recv(65536)
    head_, _, body = got.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1])
        for line in head_.lower().split(b"\r\n")
        if line.startswith(b"content-length:")
    )
    while len(body) < length:
        body += s.recv(65536)
    return got


def status_of(response: bytes) -> int:
    assert response.startswith(b"HTTP/1.1 "), response
    return int(response.split(b" ", 2)[1])


# ------------------------------------------------------------------------ Slack requests, through the front


async def test_a_signed_click_and_command_are_handled(make: Callable[..., Front], slack: FakeSlack):
    """(a) A correctly signed interactivity POST is acknowledged and handed to the bridge (here it reaches
    for Temporal, which is not there, and tells the clicker so); a signed `/deploy help` is answered."""
    f = make()
    web = make_web_client(SLACK_TOKEN, slack.url)
    wid = "deploy-front-kprod-0000aaaa"
    blocks = action_blocks("review", wid, Step.PCCR_REVIEW, [Action.APPROVE, Action.REJECT])
    ts = str(web.chat_postMessage(channel=GATE1, text="review", blocks=blocks)["ts"])
    body = form(click_payload(slack, GATE1, ts, Action.APPROVE))
    signed = sign_request(body, SIGNING_SECRET)
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.post(f.url + EVENTS_PATH, content=body, headers=signed)
        assert response.status_code == 200, response.text
        note = await eventually(
            lambda: next((e for e in slack.ephemerals if e["user"] == GATE1 and wid in e["text"]), None)
        )
        assert "could not reach Temporal" in note["text"] and len(f.temporal_calls) == 1

        command, _ = slash_body(slack, GATE1, "help")
        response = await http.post(
            f.url + EVENTS_PATH, content=command, headers=sign_request(command, SIGNING_SECRET)
        )
        assert response.status_code == 200
        assert response.json()["response_type"] == "ephemeral"
        assert "/deploy status <workflow id>" in response.json()["text"]

        # The same signed request again: the replay guard answers it and it goes no further.
        response = await http.post(f.url + EVENTS_PATH, content=body, headers=signed)
        assert response.status_code == 200 and response.headers["x-slack-no-retry"] == "1"
    await asyncio.sleep(0.5)
    assert len(f.temporal_calls) == 1


async def test_unsigned_forged_and_stale_requests_are_refused(make: Callable[..., Front], slack: FakeSlack):
    """(b) A bad or missing X-Slack-Signature, or a timestamp over five minutes old: 401, and nothing
    reaches the Temporal side (the bridge never even asks for a client)."""
    f = make()
    web = make_web_client(SLACK_TOKEN, slack.url)
    blocks = action_blocks("review", "deploy-front-kprod-0000bbbb", Step.PCCR_REVIEW, [Action.APPROVE])
    ts = str(web.chat_postMessage(channel=GATE1, text="review", blocks=blocks)["ts"])
    body = form(click_payload(slack, GATE1, ts, Action.APPROVE))
    good = sign_request(body, SIGNING_SECRET)
    cases = {
        "unsigned": {"Content-Type": "application/x-www-form-urlencoded"},
        "no signature": {k: v for k, v in good.items() if k != "X-Slack-Signature"},
        "no timestamp": {k: v for k, v in good.items() if k != "X-Slack-Request-Timestamp"},
        "wrong secret": sign_request(body, "not-the-signing-secret"),
        "garbled": {**good, "X-Slack-Signature": "v0=" + "0" * 64},
        "stale": sign_request(body, SIGNING_SECRET, timestamp=int(time.time()) - 6 * 60),
        "from the future": sign_request(body, SIGNING_SECRET, timestamp=int(time.time()) + 6 * 60),
    }
    async with httpx.AsyncClient(timeout=10) as http:
        for name, headers in cases.items():
            response = await http.post(f.url + EVENTS_PATH, content=body, headers=headers)
            assert response.status_code == 401, name
        tampered = body.replace(GATE1.encode(), b"U0MALLORY")
        response = await http.post(f.url + EVENTS_PATH, content=tampered, headers=good)
        assert response.status_code == 401
    await asyncio.sleep(0.5)  # time enough for a listener to have run, had one been reached
    assert f.temporal_calls == [] and not f.app.temporal.connected
    assert [e for e in slack.ephemerals if "0000bbbb" in e["text"]] == []


# ------------------------------------------------------------------------------- slow and big clients


async def test_a_slow_body_is_cut_off(make: Callable[..., Front]):
    """(c) Headers at once, then the body a byte at a time: 408 and the connection closed at the bound,
    well before the body would have been whole."""
    f = make(read_timeout=1.0)

    def drip() -> tuple[bytes, float]:
        with socket.create_connection(("127.0.0.1", f.port), timeout=8) as s:
            s.sendall(head(40))
            started = time.monotonic()
            try:
                for byte in b"payload=" + b"x" * 32:  # 40 bytes over 8 s, had it been let
                    s.sendall(bytes([byte]))
                    time.sleep(0.2)
            except OSError:  # the server closed the connection
                pass
            return read_to_close(s), time.monotonic() - started

    got, took = await asyncio.to_thread(drip)
    assert status_of(got) == 408 and b"connection: close" in got.lower(), got
    assert took < 5, took
    # A body that stops half way is cut off the same way.
    got, took = await asyncio.to_thread(exchange, f.port, head(100) + b"payload=")
    assert status_of(got) == 408 and took < 5, (got, took)
    assert f.temporal_calls == []


async def test_slow_or_silent_heads_are_closed(make: Callable[..., Front]):
    """uvicorn times no request head: the front does. A connection that sends nothing, or half a head, or
    drips its head, is closed unanswered at the bound; so is one that starts a second request on a
    kept-alive connection and does not finish it."""
    f = make(read_timeout=1.0, keep_alive=30)
    for data in (b"", b"POST /slack/events HTTP/1.1\r\nHost: 127.0.0.1\r\n"):
        got, took = await asyncio.to_thread(exchange, f.port, data)
        assert got == b"" and 0.5 < took < 5, (data, got, took)

    def drip_head() -> tuple[bytes, float]:
        with socket.create_connection(("127.0.0.1", f.port), timeout=8) as s:
            started = time.monotonic()
            try:
                for byte in head(10):
                    s.sendall(bytes([byte]))
                    time.sleep(0.1)
            except OSError:
                pass
            return read_to_close(s), time.monotonic() - started

    got, took = await asyncio.to_thread(drip_head)
    assert got == b"" and took < 5, (got, took)

    def second_request() -> tuple[bytes, bytes, float]:
        with socket.create_connection(("127.0.0.1", f.port), timeout=8) as s:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            first = read_response(s)
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 1")  # and no more
            started = time.monotonic()
            return first, read_to_close(s), time.monotonic() - started

    first, rest, took = await asyncio.to_thread(second_request)
    assert status_of(first) == 200 and rest == b"" and took < 5, (first, rest, took)


async def test_a_body_too_large_is_refused_unread(make: Callable[..., Front]):
    """(d) A Content-Length over the bound: 413 at once, from the headers alone (no body is sent here;
    had the front waited for it, the 408 would have come instead), on any path; a chunked body is cut
    off with 413 once past the bound."""
    assert (MAX_BODY, READ_TIMEOUT) == (1 << 20, 10.0)  # what `deployctl slack` runs with
    f = make()
    for path in (EVENTS_PATH, "/elsewhere"):
        for length in (MAX_BODY + 1, 10**12):
            got, took = await asyncio.to_thread(exchange, f.port, head(length, path))
            assert status_of(got) == 413 and b"connection: close" in got.lower(), got
            assert took < READ_TIMEOUT / 2, took
    small = make(max_body=1024)

    def chunked() -> bytes:
        with socket.create_connection(("127.0.0.1", small.port), timeout=8) as s:
            s.sendall(head(None, extra="Transfer-Encoding: chunked\r\n"))
            try:
                for _ in range(10):
                    s.sendall(b"200\r\n" + b"x" * 0x200 + b"\r\n")
            except OSError:
                pass
            return read_to_close(s)

    assert status_of(await asyncio.to_thread(chunked)) == 413
    # Malformed lengths are h11's to refuse: 400.
    for bad in (head(None, extra="Content-Length: -1\r\n"), head(5, extra="Content-Length: 6\r\n")):
        got, _ = await asyncio.to_thread(exchange, small.port, bad)
        assert status_of(got) == 400, (bad, got)
    # A head still incomplete past the h11 bound (MAX_HEADER bytes buffered): 400, without waiting for more.
    got, took = await asyncio.to_thread(exchange, small.port, head(0)[:-2] + b"X-Big: " + b"y" * 20_000)
    assert status_of(got) == 400 and took < READ_TIMEOUT / 2, (got, took)
    # A body within the bound is read and handed on (here: unsigned, so Bolt answers 401).
    async with httpx.AsyncClient(timeout=10) as http:
        form_type = {"Content-Type": "application/x-www-form-urlencoded"}
        response = await http.post(small.url + EVENTS_PATH, content=b"a=" + b"x" * 1000, headers=form_type)
        assert response.status_code == 401
        # One Bolt cannot even parse (a `payload=` that is not JSON): 400, before any signature check.
        response = await http.post(small.url + EVENTS_PATH, content=b"payload=" + b"x" * 1000)
        assert response.status_code == 400
        assert (await http.post(small.url + EVENTS_PATH, content=b"\xff\xfe")).status_code == 400  # not UTF-8


async def test_healthz_and_routes(make: Callable[..., Front]):
    """(e) /healthz answers 200 ok; other paths 404; the wrong method 405."""
    f = make()
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.get(f.url + "/healthz")
        assert response.status_code == 200 and response.text == "ok\n"
        assert response.headers["content-type"].startswith("text/plain")
        assert "server" not in response.headers
        assert (await http.head(f.url + "/healthz")).status_code == 200
        assert (await http.get(f.url + "/nowhere")).status_code == 404
        assert (await http.get(f.url + EVENTS_PATH)).status_code == 405
        assert (await http.post(f.url + "/healthz")).status_code == 405
    assert f.temporal_calls == []


async def test_connections_over_the_limit_get_503(make: Callable[..., Front]):
    """(f) uvicorn's limit_concurrency counts open connections, the requesting one included: with a limit
    of 3, a request while two other connections are held open is answered 503; once they close, 200."""
    f = make(limit_concurrency=3, read_timeout=30)
    held: list[socket.socket] = []

    def healthz() -> bytes:
        got, _ = exchange(f.port, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        return got

    def count_open() -> int:
        return len(f.front.server.server_state.connections)

    try:
        held.append(socket.create_connection(("127.0.0.1", f.port), timeout=8))
        await eventually(lambda: count_open() == 1)
        assert status_of(await asyncio.to_thread(healthz)) == 200  # 2 open with it: under the limit
        held.append(socket.create_connection(("127.0.0.1", f.port), timeout=8))
        await eventually(lambda: count_open() == 2)
        got = await asyncio.to_thread(healthz)
        assert status_of(got) == 503 and b"Service Unavailable" in got, got
    finally:
        for s in held:
            s.close()
    await eventually(lambda: count_open() == 0)
    assert status_of(await asyncio.to_thread(healthz)) == 200


async def test_idle_kept_alive_connection_is_closed(make: Callable[..., Front]):
    f = make(keep_alive=1)

    def idle() -> tuple[bytes, bytes, float]:
        with socket.create_connection(("127.0.0.1", f.port), timeout=8) as s:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            first = read_response(s)
            started = time.monotonic()
            return first, read_to_close(s), time.monotonic() - started

    first, rest, took = await asyncio.to_thread(idle)
    assert status_of(first) == 200 and rest == b"" and took < 5


# ----------------------------------------------------------------------------------------- extra routes


def test_extra_routes_are_served_within_the_same_bounds(deployment: Deployment, slack: FakeSlack):
    """Routes mounted beside the Slack ones (the webhooks to come) get the same body bound; the front's own
    paths cannot be taken."""

    async def echo(request: Request) -> Response:
        return PlainTextResponse(str(len(await request.body())))

    web = make_web_client(SLACK_TOKEN, slack.url)

    async def never() -> Client:
        raise AssertionError("not reached")

    app = create_app(deployment.config, never, web, SIGNING_SECRET)
    try:
        with pytest.raises(ValueError, match="front's own route"):
            make_asgi_app(app, extra_routes=[Route("/healthz", echo)])
        asgi = make_asgi_app(app, extra_routes=[Route("/hooks/echo", echo, methods=["POST"])], max_body=100)
        with HttpFront(asgi, "127.0.0.1", 0, Limits(max_body=100)) as front:
            base = f"http://127.0.0.1:{front.port}"
            with httpx.Client(timeout=10) as http:
                assert http.post(base + "/hooks/echo", content=b"x" * 100).text == "100"
                assert http.post(base + "/hooks/echo", content=b"x" * 101).status_code == 413
                assert http.get(base + "/healthz").text == "ok\n"
    finally:
        app.close()


def test_the_port_in_use_is_an_os_error():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(OSError):
            HttpFront(Starlette(), "127.0.0.1", taken.getsockname()[1])
    assert http_front.LIMIT_CONCURRENCY > 3


def test_deployctl_slack_serves_http_and_stops_on_sigterm(deployment: Deployment, slack: FakeSlack):
    """The entry point as compose runs it: `deployctl slack --host … --port …` in HTTP mode serves the
    front (healthz, a signed `/deploy help`), and SIGTERM stops it with exit code 0."""
    import os
    import re
    import signal
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    env = {
        **os.environ,
        "PYTHONPATH": str(root),
        "SLACK_BOT_TOKEN": SLACK_TOKEN,
        "SLACK_SIGNING_SECRET": SIGNING_SECRET,
        "SLACK_APP_TOKEN": "",
    }
    command = [sys.executable, "-m", "starter.cli", "--config", str(deployment.config_path)]
    proc = subprocess.Popen(
        [*command, "slack", "--host", "127.0.0.1", "--port", "0"],
        env=env,
        cwd=root,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        said = ""
        while "listening on" not in said:
            line = proc.stderr.readline()
            assert line, f"the bridge exited: {said}"
            said += line
        found = re.search(r"http://127\.0\.0\.1:(\d+)/slack/events", said)
        assert found, said
        base = f"http://127.0.0.1:{found.group(1)}"
        with httpx.Client(timeout=10) as http:
            assert http.get(base + "/healthz").text == "ok\n"
            command_body, _ = slash_body(slack, GATE1, "help")
            response = http.post(
                base + EVENTS_PATH, content=command_body, headers=sign_request(command_body, SIGNING_SECRET)
            )
            assert response.status_code == 200 and "/deploy status" in response.json()["text"]
            assert http.post(base + EVENTS_PATH, content=command_body).status_code == 401
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_blocked_dispatch_does_not_hold_the_event_loop(slack: FakeSlack):
    """Bolt's dispatch blocks until the listener acks; the front runs it in a worker thread, so while a
    listener is stuck, /healthz and other requests are still answered (had dispatch run on the loop,
    the stuck request would have had to end first)."""
    import threading

    from slack_bolt import Ack, App

    entered, gate = threading.Event(), threading.Event()
    app = App(
        signing_secret=SIGNING_SECRET,
        client=make_web_client(SLACK_TOKEN, slack.url),
        token_verification_enabled=False,
    )

    @app.command("/deploy")
    def stuck(ack: Ack) -> None:
        entered.set()
        gate.wait(20)
        ack()

    body, _ = slash_body(slack, GATE1, "help")
    done: list[int] = []
    with make_front(app, "127.0.0.1", 0) as front:
        base = f"http://127.0.0.1:{front.port}"

        def post() -> None:
            with httpx.Client(timeout=30) as http:
                done.append(
                    http.post(
                        base + EVENTS_PATH, content=body, headers=sign_request(body, SIGNING_SECRET)
                    ).status_code
                )

        poster = threading.Thread(target=post)
        poster.start()
        try:
            assert entered.wait(10)
            with httpx.Client(timeout=30) as http:
                assert http.get(base + "/healthz").text == "ok\n"
                assert (
                    http.post(base + EVENTS_PATH, content=b"a=1").status_code == 401
                )  # Bolt, in another thread
            assert done == []  # the stuck request is still stuck
        finally:
            gate.set()
            poster.join(30)
    assert done == [200]
