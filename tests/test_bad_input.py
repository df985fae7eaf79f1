"""Bad input, property-based: whatever people send or write, deployctl answers with one line and holds.

* Messages: malformed or unauthorised payloads sent to a running deploy on the dev server, as Updates
  (refused with a one-line reason, nothing written) and as Signals (recorded as refused, nothing else
  changes); no workflow task ever fails.
* Params files: `read_params` returns a dict[str, str] or raises UsageError with one line.
* Config files: `load_config` returns a Config or raises ConfigError with one line.
* Policy: `policy.refusal` never raises, and says None or one line.

Each live test starts one deploy and reuses it for all its examples (hence the suppressed
function-scoped-fixture health check); the example counts are small to keep the suite fast.
"""

from __future__ import annotations

import json
import math
import tempfile
import tomllib
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import yaml
from hypothesis import HealthCheck, assume, example, given, note, settings
from hypothesis import strategies as st
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError

from starter.cli import read_params
from starter.client import Refused, UsageError, send_action, start_deploy
from starter.config import ENV_OVERRIDES, Config, ConfigError, load_config
from starter.devstack import wait_for_step
from tests import keys
from tests.conftest import CONFIG_TEMPLATE, GATE1, GATE2, OWNER, PARAMS, SRE1, SRE2, Deployment, eventually
from workflows import policy
from workflows.models import Action, ActionInput, ActionResult, Cloud, DeployStatus, Process, Role, Step
from workflows.steps import steps_for


def one_line(text: object) -> bool:
    """A reason a person reads in a terminal or Slack: not empty, and exactly one line."""
    return isinstance(text, str) and bool(text.strip()) and len(text.splitlines()) == 1


# ---------------------------------------------------------------------------------------------------
# Strategies shared by the tests

PEOPLE = [OWNER, GATE1, GATE2, SRE1, SRE2, "U0VP1", "U0SREG1", "U0OUTSIDE"]
STEP_NAMES = [s.value for s in Step]

huge_text = st.builds(lambda ch, n: ch * n, st.characters(codec="utf-8"), st.integers(1_000, 30_000))
tricky_text = st.sampled_from(
    [
        "",
        " ",
        "\t",
        "\n",
        "null",
        "None",
        "U0GATE1\n",
        " U0GATE1",
        "U0GATE1 ",
        "u0gate1",
        "\x00",
        "\u2028",
        "PCCR_REVIEW",
        "pccr-review",
        "pccr_review ",
        "done",
        "deploying\n",
        "{service}",
        "' OR 1=1 --",
        "<@U0GATE1>",
        "\u202etxet",
        "😀" * 3,
    ]
)
text = st.text(max_size=40) | tricky_text | huge_text
scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | text
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
actors = st.sampled_from(PEOPLE) | text | json_values
step_values = st.sampled_from(STEP_NAMES) | text | json_values
field_values = st.none() | st.sampled_from(PEOPLE) | text | json_values
payloads = (
    st.fixed_dictionaries(
        {},
        optional={
            "actor": actors,
            "step": step_values,
            "comment": field_values,
            "sre": field_values,
            "diff_sha256": field_values,
            "channel": field_values,
        },
    ).flatmap(
        lambda known: st.dictionaries(st.text(max_size=12), json_values, max_size=3).map(
            lambda extra: {**extra, **known}
        )
    )
    | json_values  # not an object at all
)

# At pccr_review, exactly these (action, actor) pairs are allowed; everything else must be refused.
ACCEPTED_AT_REVIEW = {
    (Action.APPROVE, GATE1),
    (Action.APPROVE, GATE2),
    (Action.REJECT, GATE1),
    (Action.REJECT, GATE2),
    (Action.CANCEL, OWNER),
    (Action.CANCEL, GATE1),
    (Action.CANCEL, GATE2),
}


def would_be_accepted(action: Action, payload: Any) -> bool:
    """The test's own oracle: a well-formed message by someone allowed to act at pccr_review."""
    try:
        msg = ActionInput.model_validate(payload)
    except Exception:
        return False
    return msg.step is Step.PCCR_REVIEW and (action, msg.actor) in ACCEPTED_AT_REVIEW


# ---------------------------------------------------------------------------------------------------
# Messages to a running deploy (dev server)

LIVE = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


async def status(handle: WorkflowHandle) -> DeployStatus:
    return await handle.query("status", result_type=DeployStatus)


def standing(st_: DeployStatus) -> tuple:
    """Everything a refused message must leave as it was."""
    return (
        st_.step,
        st_.waiting_on,
        st_.allowed_actions,
        st_.outcome,
        st_.sre,
        st_.pccr,
        st_.build,
        st_.blocked_by,
        len(st_.rosters),
    )


async def task_failures(handle: WorkflowHandle) -> list[str]:
    failed = []
    async for event in handle.fetch_history_events():
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED:
            attrs = event.workflow_task_failed_event_attributes
            failed.append(f"event {event.event_id}: {attrs.failure.message}")
    return failed


@pytest_asyncio.fixture
async def at_review(client: Client, deployment: Deployment, worker: None) -> WorkflowHandle:
    """One deploy waiting at pccr_review, shared by every example of a test."""
    d = deployment
    wid, _ = await start_deploy(client, d.config, Process.OOW, d.service, "kprod", dict(PARAMS), None, OWNER)
    await wait_for_step(client, wid, Step.PCCR_REVIEW, GATE1)
    return client.get_workflow_handle(wid)


@LIVE
@given(action=st.sampled_from(list(Action)), payload=payloads, via_cli=st.booleans())
@example(action=Action.APPROVE, payload={"step": "pccr_review"}, via_cli=False)
@example(action=Action.APPROVE, payload={"actor": OWNER, "step": "pccr_review"}, via_cli=True)
@example(action=Action.APPROVE, payload={"actor": "U0OUTSIDE\nU0GATE1", "step": "pccr_review"}, via_cli=False)
async def test_malformed_updates_are_refused_in_one_line_and_change_nothing(
    client: Client, at_review: WorkflowHandle, action: Action, payload: Any, via_cli: bool
):
    assume(not would_be_accepted(action, payload))
    handle = at_review
    before = await status(handle)
    if via_cli:  # the CLI's path: its Refused carries the workflow's reason
        with pytest.raises(Refused) as refused:
            await send_action(client, handle.id, action, payload)
        reason = str(refused.value)
    else:  # the `temporal workflow update` path
        with pytest.raises(WorkflowUpdateFailedError) as failed:
            await handle.execute_update(action.value, payload, result_type=ActionResult)
        cause = failed.value.cause
        assert isinstance(cause, ApplicationError) and cause.type == "Refused", repr(cause)
        reason = cause.message
    note(f"reason: {reason!r}")
    assert one_line(reason), f"not one line: {reason[:300]!r}"
    after = await status(handle)
    assert standing(after) == standing(before)
    assert len(after.audit) == len(before.audit), "a refused Update writes nothing"
    assert await task_failures(handle) == []


@LIVE
@given(action=st.sampled_from(list(Action)), payload=payloads)
@example(action=Action.APPROVE, payload="not an object")
@example(action=Action.CANCEL, payload={"actor": SRE1, "step": "pccr_review"})
@example(action=Action.APPROVE, payload={"actor": "U0OUTSIDE\nU0GATE1", "step": "pccr_review"})
async def test_malformed_signals_are_recorded_as_refused_and_change_nothing(
    client: Client, at_review: WorkflowHandle, action: Action, payload: Any
):
    assume(not would_be_accepted(action, payload))
    handle = at_review
    before = await status(handle)
    await handle.signal(action.value, payload)
    after = await eventually(
        lambda: _with_audit_longer_than(handle, len(before.audit)), timeout=10, interval=0.05
    )
    assert len(after.audit) == len(before.audit) + 1, "one audit entry per refused Signal"
    entry = after.audit[-1]
    note(f"entry: {entry!r}")
    assert not entry.accepted and entry.action == action.value and entry.step is Step.PCCR_REVIEW
    assert one_line(entry.reason), f"not one line: {(entry.reason or '')[:300]!r}"
    assert standing(after) == standing(before)
    assert await task_failures(handle) == []


async def _with_audit_longer_than(handle: WorkflowHandle, n: int) -> DeployStatus | None:
    st_ = await status(handle)
    return st_ if len(st_.audit) > n else None


# ---------------------------------------------------------------------------------------------------
# Params files

OFFLINE = settings(max_examples=200, deadline=None)

yaml_snippets = st.sampled_from(
    [
        "a: 1",
        "IMAGE_TAG: 1.4.2",
        "a: 2001-13-45",
        "a: 2024-01-01",
        "a: 12:30:00",
        "a: 0x1F",
        "a: 1_000",
        "a: .nan",
        "a: -.inf",
        "a: yes",
        "a: ~",
        "~: x",
        "null: x",
        "1: x",
        "? [1]\n: 2",
        "a: &x [1]\nb: *x",
        "a: !!binary aGVsbG8=",
        "a: !!python/object:os.system x",
        "a: !!str",
        "{",
        "a: [",
        "- 1",
        "---\na: 1\n---\nb: 2",
        "a: 1\na: 2",
        '"a\\nb": [1]',
        '"a\\nb": 1',
        "'': 1",
        "a: |\n  x\n  y",
        "\ta: 1",
        "a:\n  - 1",
        "%YAML 1.1\n---\na: 1",
        "\ufeffa: 1",
        "a: 'unterminated",
        "a: {b: c}",
        "<<: {a: 1}",
        "a: !!timestamp 2001-12-14t21:59:43.10-05:00",
    ]
)


def _nested(depth: int, open_: str, close: str) -> str:
    return open_ * depth + close * depth


params_texts = st.one_of(
    json_values.map(json.dumps),
    json_values.map(lambda v: yaml.safe_dump(v, allow_unicode=True)),
    st.lists(yaml_snippets, min_size=1, max_size=4).map("\n".join),
    st.text(max_size=200),
    st.integers(1, 50).map(lambda n: _nested(n, "[", "]")),
    st.integers(1, 50).map(lambda n: "a: " + _nested(n, "{b: ", "}")),
)
params_contents = params_texts.map(lambda t: t.encode("utf-8")) | st.binary(max_size=200)


@OFFLINE
@given(content=params_contents, suffix=st.sampled_from([".json", ".yaml", ".yml", ""]))
@example(content=b'{"IMAGE_TAG": "1.4.2", "REPLICAS": 3, "DRY_RUN": false}', suffix=".json")
@example(content="IMAGE_TAG: 1.4.2\n".encode("utf-16"), suffix=".yaml")  # saved as UTF-16 by an editor
@example(content=_nested(5000, "[", "]").encode(), suffix=".json")
@example(content=("IMAGE_TAG: " + _nested(5000, "[", "]")).encode(), suffix=".yaml")
@example(content=b'"IMAGE\\nTAG": [1]', suffix=".yaml")
def test_read_params_returns_text_params_or_one_usage_line(content: bytes, suffix: str):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"params{suffix}"
        path.write_bytes(content)
        try:
            params = read_params(str(path))
        except UsageError as err:
            assert one_line(str(err)), f"not one line: {str(err)[:300]!r}"
            return
    assert isinstance(params, dict)
    assert all(isinstance(k, str) and k and isinstance(v, str) for k, v in params.items())


# ---------------------------------------------------------------------------------------------------
# Config files

VALID_CONFIG = CONFIG_TEMPLATE.format(
    task_queue="deployctl",
    jenkins_url="http://127.0.0.1:8080",
    jenkins_extra="timeout = 10",
    slack_url="http://127.0.0.1:8081/api/",
    github_url="http://127.0.0.1:8082/api/v3",
    service="payments-api",
    job="deploy-payments-api",
    pccr_backend="github",
    valkyr="false",
    timeouts='pccr_review = "3d"\ndiff_validation = "4h"',
    bridge_key=keys.public(keys.BRIDGE),
) + (
    "\n[release]\nlead_time_days = 14\nwindows = [\n"
    '  { name = "2026.12", start = "2026-12-15T16:00:00Z", end = "2026-12-15T20:00:00Z" },\n'
    '  { name = "2027.01", start = 2027-01-12T16:00:00Z, end = 2027-01-12T20:00:00Z },\n]\n'
)

bad_strings = st.sampled_from(
    [
        "",
        " ",
        "\n",
        "a\nb",
        "\x00",
        "{service.nope}",
        "{service!r}",
        "{service:>{w}}",
        "{service[9]}",
        "{0}",
        "{",
        "}",
        "{service}{",
        "not a url",
        "http://",
        "ftp://x",
        "https://:0",
        "http://[::1",
        "owner/",
        "/name",
        "a/b/c",
        "U0",
        "u0abc",
        "S0GROUP",
        "W0123",
        "U0 1",
        "U0OWNER1\n",
        "-bad",
        ".x",
        "3",
        "3x",
        "1w",
        "1.5h",
        "-1s",
        "0s",
        "0d",
        "4 h",
        "4H",
        "1e3s",
        "99999999999999999999d",
        "2026-13-01T00:00:00Z",
        "2026-01-01",
        "2026-01-01T00:00:00",
        "0001-01-01T00:00:00+01:00",
        "9999-12-31T23:59:59-01:00",
        "2026-12-15T16:00:00+25:00",
        "com",
        "gov",
        "mil",
        "builtin",
        "github",
    ]
)
bad_values = st.one_of(
    bad_strings,
    st.text(max_size=30),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(),
    st.booleans(),
    st.datetimes(timezones=st.none() | st.just(UTC)),
    st.dates(),
    st.times(),
    st.lists(bad_strings | st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=8), bad_strings | st.integers(), max_size=3),
)


def _like(original: Any) -> st.SearchStrategy[Any]:
    """A wrong value, most often of the original's own kind (a bad string for a string, …)."""
    if isinstance(original, str):
        return st.one_of(bad_strings, bad_strings, st.text(max_size=30), bad_values)
    if isinstance(original, datetime):
        return st.one_of(
            st.datetimes(timezones=st.none() | st.just(UTC) | st.timezones()), bad_strings, bad_values
        )
    if isinstance(original, bool | int):
        return st.one_of(st.integers(), st.booleans(), bad_values)
    return bad_values


def _paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    """Every place in the parsed TOML: table keys and list indexes, depth first."""
    found = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, inner in value.items():
            found += _paths(inner, (*prefix, key))
    elif isinstance(value, list):
        for i, inner in enumerate(value):
            found += _paths(inner, (*prefix, i))
    return found


def _mutate(doc: dict, data: st.DataObject) -> None:
    """Drop a key, set a wrong value, or add an unknown key, somewhere in the document."""
    path = data.draw(st.sampled_from(_paths(doc)), label="path")
    parent: Any = doc
    for part in path[:-1]:
        parent = parent[part]
    kind = data.draw(st.sampled_from(["drop", "set", "set", "add"]), label="mutation")
    if kind == "drop":
        del parent[path[-1]]
    elif kind == "set":
        parent[path[-1]] = data.draw(_like(parent[path[-1]]), label="value")
    else:
        target = parent[path[-1]] if isinstance(parent[path[-1]], dict) else parent
        if isinstance(target, dict):
            target[data.draw(st.text(max_size=12), label="new key")] = data.draw(bad_values, label="value")


def _toml_string(text: str) -> str:
    out = []
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04X}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_toml_string(k)} = {_toml(v)}" for k, v in value.items()) + " }"
    raise TypeError(type(value))


def to_toml(doc: dict) -> str:
    """A TOML document with every table inline (tomllib reads back exactly `doc`)."""
    return "".join(f"{_toml_string(k)} = {_toml(v)}\n" for k, v in doc.items())


def test_the_base_config_is_valid_and_round_trips():
    doc = tomllib.loads(VALID_CONFIG)
    assert tomllib.loads(to_toml(doc)) == doc
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "deployctl.toml"
        path.write_text(to_toml(doc))
        assert isinstance(load_config(path, env={}), Config)


env_overrides = st.dictionaries(st.sampled_from(sorted(ENV_OVERRIDES)), bad_strings | st.text(max_size=20))


def assert_loads_or_one_line(content: bytes, env: dict[str, str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "deployctl.toml"
        path.write_bytes(content)
        try:
            config = load_config(path, env=env)
        except ConfigError as err:
            assert one_line(str(err)), f"not one line: {str(err)[:300]!r}"
            return
    assert isinstance(config, Config)


@OFFLINE
@given(data=st.data(), env=env_overrides)
def test_load_config_returns_a_config_or_one_config_error_line(data: st.DataObject, env: dict[str, str]):
    doc = tomllib.loads(VALID_CONFIG)
    for _ in range(data.draw(st.integers(1, 3), label="mutations")):
        if _paths(doc):
            _mutate(doc, data)
    text = to_toml(doc)
    if data.draw(st.integers(0, 4), label="garble the text") == 0:
        at = data.draw(st.integers(0, len(text)), label="at")
        junk = data.draw(st.text(max_size=10) | st.sampled_from(["[", "=", '"', "\n["]), label="junk")
        text = text[:at] + junk + text[at:]
    content = text.encode("utf-8")
    if data.draw(st.integers(0, 19), label="binary") == 0:
        content = data.draw(st.binary(max_size=100), label="bytes")
    assert_loads_or_one_line(content, env)


# Found by the property above (kept so they are checked on every run, not only when drawn again).
KNOWN = {
    "version_file names an attribute": (("github", "version_file"), "channel-gov/{service.name}.yaml"),
    "window start at datetime's lower edge": (
        ("release", "windows", 0, "start"),
        "0001-01-01T00:00:00+01:00",
    ),
    "window end at datetime's upper edge": (("release", "windows", 0, "end"), "9999-12-31T23:59:59-01:00"),
    "timeout too long": (("timeouts", "pccr_review"), "99999999999999999999d"),
    "user id with a newline": (("groups", "sre"), ["U0SRE1\n"]),
    "no gatekeepers": (("groups", "pccr-gatekeeper"), []),
}


@pytest.mark.parametrize("where, value", KNOWN.values(), ids=KNOWN.keys())
def test_load_config_known_bad_values(where: tuple, value: Any):
    doc = tomllib.loads(VALID_CONFIG)
    parent: Any = doc
    for part in where[:-1]:
        parent = parent[part]
    parent[where[-1]] = value
    assert_loads_or_one_line(to_toml(doc).encode(), env={})


# ---------------------------------------------------------------------------------------------------
# Pure policy

ids = st.sampled_from(PEOPLE)
rosters = st.lists(ids, max_size=4).map(tuple)


@st.composite
def situations(draw: st.DrawFn) -> policy.Situation:
    process, cloud, valkyr = (
        draw(st.sampled_from(list(Process))),
        draw(st.sampled_from(list(Cloud))),
        draw(st.booleans()),
    )
    return policy.Situation(
        service=draw(st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,20}", fullmatch=True)),
        cloud=cloud,
        steps=steps_for(process, cloud, valkyr),
        step=draw(st.sampled_from(list(Step))),
        parties=policy.Parties(
            code_owners=draw(rosters),
            groups=draw(st.dictionaries(st.sampled_from([r.value for r in Role]), rosters)),
            assigned_sre=draw(st.none() | ids),
        ),
        finished=draw(st.booleans()),
        busy=draw(st.booleans()),
        diff_sha256=draw(st.none() | st.from_regex(r"[0-9a-f]{64}", fullmatch=True)),
    )


messages = st.builds(  # unvalidated: the policy must hold up even for what a validator would stop
    ActionInput.model_construct,
    actor=ids | st.text(min_size=1, max_size=40) | tricky_text.filter(bool),
    step=st.sampled_from(list(Step)),
    comment=st.none() | text,
    sre=st.none() | ids | text,
    diff_sha256=st.none() | st.text(max_size=70) | st.from_regex(r"[0-9a-fA-F]{64}", fullmatch=True),
    channel=st.none() | st.text(max_size=10),
)


@settings(max_examples=500, deadline=None)
@given(action=st.sampled_from(list(Action)), msg=messages, situation=situations())
@example(
    action=Action.APPROVE,
    msg=ActionInput.model_construct(actor="U0OUTSIDE\nU0GATE1", step=Step.PCCR_REVIEW),
    situation=policy.Situation(
        service="payments-api",
        cloud=Cloud.COM,
        steps=steps_for(Process.OOW, Cloud.COM, False),
        step=Step.PCCR_REVIEW,
        parties=policy.Parties(code_owners=(OWNER,), groups={"pccr-gatekeeper": (GATE1,)}),
    ),
)
def test_policy_refusal_never_raises_and_says_none_or_one_line(
    action: Action, msg: ActionInput, situation: policy.Situation
):
    reason = policy.refusal(action, msg, situation)
    assert reason is None or one_line(reason), f"not one line: {reason[:300]!r}"


def test_strategies_cover_what_they_claim():
    """Guard against a strategy that silently stopped producing its cases."""
    assert not would_be_accepted(Action.APPROVE, {"actor": OWNER, "step": "pccr_review"})
    assert would_be_accepted(Action.APPROVE, {"actor": GATE1, "step": "pccr_review", "comment": "ok"})
    assert not would_be_accepted(
        Action.APPROVE, {"actor": GATE1, "step": "pccr_review", "x": 1}
    )  # unknown key
    assert not would_be_accepted(Action.APPROVE, {"actor": GATE1, "step": "pccr_review", "comment": 3})
