"""`deployctl verify`: an `audit --format json` export's signatures re-checked offline (SPEC §9).

Exports are built here the way the workflow writes its entries (payload = the signed body, signature, key,
identity = "ssh:" + fingerprint), with real keys signed through real `ssh-keygen`, and rendered by the real
JSON exporter. Then they are tampered with, one way each, and every way must fail and name the entry.
The `--explain` files are checked with plain `/usr/bin/ssh-keygen -Y verify`. No Temporal server.
"""

from __future__ import annotations

import copy
import json
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from starter.audit import render_audit
from starter.signing import sign_payload, throwaway_key
from starter.verify import (
    NotAnExport,
    ssh_keygen_check_command,
    verify_command,
    verify_export,
)
from workflows import signing
from workflows.models import AuditEntry, Cloud, DeployStatus, Process, Step

SSH_KEYGEN = Path("/usr/bin/ssh-keygen")
pytestmark = pytest.mark.skipif(not SSH_KEYGEN.exists(), reason="needs /usr/bin/ssh-keygen (openssh-client)")

WID = "deploy-payments-api-kprod-1a2b3c4d"
OTHER_WID = "deploy-payments-api-kprod-99999999"
OWNER, SRE1, MALLORY = "U0OWNER", "U0SRE1", "U0MALLORY"
T0 = datetime(2026, 3, 2, 14, 0, 0, tzinfo=UTC)
START_INDEX, APPROVE_INDEX = 1, 3  # where the signed entries sit in the export (see `export`)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[str, str]]:
    """name → (private key file, public key line), for the owner, the SRE, an outsider and the bridge."""
    directory = tmp_path_factory.mktemp("keys")
    out = {}
    for name in (OWNER, SRE1, MALLORY, "bridge"):
        path, line = throwaway_key(directory, name)
        out[name] = (str(path), line)
    return out


def signed_entry(
    keys: dict[str, tuple[str, str]],
    signer: str,
    sent: dict[str, Any],
    action: str,
    step: Step,
    *,
    wid: str = WID,
    prefix: str = "ssh",
    at: int = 0,
    role: str | None = None,
) -> AuditEntry:
    """An accepted entry as the workflow records it: what was sent, signed by `signer`'s key for `wid`."""
    private, public = keys[signer]
    payload = sign_payload(sent, wid, action, private, now=T0 + timedelta(seconds=at))
    body = signing.signed_body(payload, wid, action)
    return AuditEntry(
        time=T0 + timedelta(seconds=at),
        step=step,
        action=action,
        actor=str(sent["actor"]),
        channel=str(sent.get("channel") or "cli"),
        accepted=True,
        role=role,
        comment=sent.get("comment"),
        identity=f"{prefix}:{signing.fingerprint(public)}",
        payload=body,
        signature=payload["signature"],
        key=public,
    )


def status(entries: list[AuditEntry]) -> DeployStatus:
    return DeployStatus(
        workflow_id=WID,
        process=Process.OOW,
        cloud=Cloud.COM,
        service="payments-api",
        environment="kprod",
        step=Step.DEPLOY_APPROVAL,
        waiting_on=[],
        allowed_actions=[],
        audit=entries,
    )


def export_of(entries: list[AuditEntry]) -> dict[str, Any]:
    """What `deployctl audit WID --format json` prints for these entries, parsed."""
    return json.loads(render_audit(status(entries), "json"))


@pytest.fixture(scope="module")
def good(keys: dict[str, tuple[str, str]]) -> dict[str, Any]:
    """A deploy's export: a deployctl note, a signed start, a refused claimed action, a signed approval."""
    intent = {
        "process": "oow",
        "service": "payments-api",
        "environment": "kprod",
        "params": {"IMAGE_TAG": "1.4.2"},
        "actor": OWNER,
        "channel": "cli",
    }
    approve = {"actor": SRE1, "step": "deploy_approval", "comment": "ship it", "channel": "cli"}
    entries = [
        AuditEntry(
            time=T0,
            step=Step.PCCR_REVIEW,
            action="rules",
            actor="deployctl",
            channel="deployctl",
            accepted=True,
            reason="rules read from the workers' config",
            identity="deployctl",
        ),
        signed_entry(keys, OWNER, intent, "start", Step.PCCR_REVIEW, at=1, role="code-owner"),
        AuditEntry(
            time=T0 + timedelta(seconds=60),
            step=Step.PCCR_REVIEW,
            action="approve",
            actor=MALLORY,
            channel="signal",
            accepted=False,
            reason="unsigned action",
        ),
        signed_entry(keys, SRE1, approve, "approve", Step.DEPLOY_APPROVAL, at=120, role="assigned-sre"),
    ]
    doc = export_of(entries)
    assert [e["action"] for e in doc["audit"]] == ["rules", "start", "approve", "approve"]
    assert "step" not in doc["audit"][START_INDEX]["payload"]  # a start's intent names no step
    return doc


def write(tmp_path: Path, doc: Any, name: str = "audit.json") -> str:
    path = tmp_path / name
    path.write_text(json.dumps(doc, indent=2, ensure_ascii=False), encoding="utf-8")
    return str(path)


def run(*args: str) -> Result:
    return CliRunner().invoke(verify_command, list(args), catch_exceptions=False)


def tampered(good: dict[str, Any]) -> dict[str, Any]:
    return copy.deepcopy(good)


def assert_fails_naming(result: Result, index: int, because: str) -> None:
    assert result.exit_code == 3, result.output
    lines = result.stdout.strip().splitlines()
    assert lines[-1] == "1/2 signatures verify"
    failing = [ln for ln in lines if ln.startswith(f"audit[{index}] ")]
    assert len(failing) == 1 and len(lines) == 2, lines
    assert because in failing[0], failing[0]


# ------------------------------------------------------------------------------------------- verifying


def test_a_good_export_verifies(tmp_path: Path, good: dict[str, Any]):
    r = run(write(tmp_path, good))
    assert r.exit_code == 0, r.output
    assert r.stdout.strip() == "2/2 signatures verify"
    report = verify_export(good)
    assert (report.total, report.verified, report.failures, report.entries) == (2, 2, [], 4)


def test_an_entry_whose_comment_was_edited_fails(tmp_path: Path, good: dict[str, Any]):
    doc = tampered(good)
    doc["audit"][APPROVE_INDEX]["comment"] = "ship it (I checked the diff)"
    r = run(write(tmp_path, doc))
    assert_fails_naming(
        r, APPROVE_INDEX, 'signed comment "ship it" but the entry says "ship it (I checked the diff)"'
    )
    assert f"2026-03-02T14:02:00Z approve by {SRE1}" in r.stdout


def test_a_payload_whose_comment_was_edited_fails_its_signature(tmp_path: Path, good: dict[str, Any]):
    doc = tampered(good)
    doc["audit"][APPROVE_INDEX]["payload"]["comment"] = "ship it (I checked the diff)"
    doc["audit"][APPROVE_INDEX]["comment"] = "ship it (I checked the diff)"  # both, consistently
    r = run(write(tmp_path, doc))
    assert_fails_naming(r, APPROVE_INDEX, "the signature does not verify with the entry's key")


def test_a_swapped_key_fails(tmp_path: Path, good: dict[str, Any], keys: dict[str, tuple[str, str]]):
    doc = tampered(good)
    doc["audit"][APPROVE_INDEX]["key"] = keys[MALLORY][1]
    r = run(write(tmp_path, doc))
    assert_fails_naming(r, APPROVE_INDEX, "the signature does not verify with the entry's key")
    assert "identity names key" in r.stdout  # and the identity no longer matches the key


def test_a_swapped_key_with_a_matching_identity_still_fails(
    tmp_path: Path, good: dict[str, Any], keys: dict[str, tuple[str, str]]
):
    doc = tampered(good)
    doc["audit"][APPROVE_INDEX]["key"] = keys[MALLORY][1]
    doc["audit"][APPROVE_INDEX]["identity"] = "ssh:" + signing.fingerprint(keys[MALLORY][1])
    r = run(write(tmp_path, doc))
    assert_fails_naming(r, APPROVE_INDEX, "the entry's key: it was made by another key (SHA256:")
    assert "identity names key" not in r.stdout


def test_an_identity_naming_another_key_fails(
    tmp_path: Path, good: dict[str, Any], keys: dict[str, tuple[str, str]]
):
    doc = tampered(good)
    other = signing.fingerprint(keys[MALLORY][1])
    doc["audit"][START_INDEX]["identity"] = "ssh:" + other
    r = run(write(tmp_path, doc))
    assert_fails_naming(r, START_INDEX, f'identity names key "{other}" but the entry\'s key is')
    assert "signature does not verify" not in r.stdout  # the signature itself is fine


def test_an_entry_signed_for_another_deploy_fails(
    tmp_path: Path, good: dict[str, Any], keys: dict[str, tuple[str, str]]
):
    """A real signature by the right key, for the same action, but over another deploy's id."""
    elsewhere = signed_entry(
        keys,
        SRE1,
        {"actor": SRE1, "step": "deploy_approval", "comment": "ship it", "channel": "cli"},
        "approve",
        Step.DEPLOY_APPROVAL,
        wid=OTHER_WID,
        at=120,
    )
    doc = tampered(good)
    doc["audit"][APPROVE_INDEX] = json.loads(elsewhere.model_dump_json())
    assert verify_export({"workflow_id": OTHER_WID, "audit": [doc["audit"][APPROVE_INDEX]]}).ok
    r = run(write(tmp_path, doc))
    assert_fails_naming(r, APPROVE_INDEX, f'signed for deploy "{OTHER_WID}", not this export\'s "{WID}"')


def test_an_entry_moved_to_another_step_or_actor_fails(good: dict[str, Any]):
    doc = tampered(good)
    doc["audit"][APPROVE_INDEX]["step"] = "clearance"
    doc["audit"][START_INDEX]["actor"] = MALLORY
    report = verify_export(doc)
    assert (report.total, report.verified) == (2, 0)
    why = {f.index: " ".join(f.reasons) for f in report.failures}
    assert 'signed step "deploy_approval" but the entry says "clearance"' in why[APPROVE_INDEX]
    assert f'signed actor "{OWNER}" but the entry says "{MALLORY}"' in why[START_INDEX]


def test_a_stripped_signature_or_a_copied_entry_fails(good: dict[str, Any]):
    doc = tampered(good)
    doc["audit"][START_INDEX]["signature"] = None  # still says ssh:…, so it claims to have been signed
    doc["audit"].append(copy.deepcopy(good["audit"][APPROVE_INDEX]))  # a replayed approval
    report = verify_export(doc)
    assert (report.total, report.verified) == (3, 1)
    why = {f.index: " ".join(f.reasons) for f in report.failures}
    assert set(why) == {START_INDEX, 4}
    assert "carries no signature" in why[START_INDEX]
    assert f"its nonce is audit[{APPROVE_INDEX}]'s too" in why[4]


def test_a_refused_signed_action_keeps_no_evidence_and_is_not_counted(good: dict[str, Any]):
    """The workflow keeps the payload and signature of accepted entries only; a refused one names the
    key that signed it and nothing to check it with."""
    doc = tampered(good)
    doc["audit"][2]["identity"] = doc["audit"][APPROVE_INDEX]["identity"]
    assert doc["audit"][2]["accepted"] is False and doc["audit"][2]["signature"] is None
    assert verify_export(doc).lines() == ["2/2 signatures verify"]
    doc["audit"][2]["accepted"] = True  # the same entry, accepted, claims a signature it does not carry
    report = verify_export(doc)
    assert (report.total, report.verified, report.failures[0].index) == (3, 2, 2)


def test_a_bridge_signed_click_verifies_only_as_a_slack_click(
    tmp_path: Path, keys: dict[str, tuple[str, str]]
):
    click_ = {"actor": SRE1, "step": "deploy_approval", "channel": "slack"}
    entry = signed_entry(keys, "bridge", click_, "approve", Step.DEPLOY_APPROVAL, prefix="slack-bridge")
    doc = export_of([entry])
    r = run(write(tmp_path, doc))
    assert r.exit_code == 0 and r.stdout.strip() == "1/1 signatures verify", r.output
    doc["audit"][0]["identity"] = doc["audit"][0]["identity"].replace("slack-bridge:", "ssh:", 1)
    report = verify_export(doc)
    assert not report.ok and "names a person's key" in report.failures[0].line()


def test_an_export_without_signed_entries_says_identities_are_claimed(tmp_path: Path, good: dict[str, Any]):
    doc = tampered(good)
    doc["audit"] = [e for e in doc["audit"] if e["signature"] is None]
    assert len(doc["audit"]) == 2
    r = run(write(tmp_path, doc))
    assert r.exit_code == 0, r.output
    assert r.stdout.strip() == "0/0 signatures verify (no signed entries: identities are claimed)"


@pytest.mark.parametrize(
    "content, says",
    [
        (b"\x00\x01garbage\xff", "not UTF-8"),
        (b"not json at all", "is not JSON"),
        (b"[1, 2, 3]", "JSON list, not an object"),
        (b'{"workflow_id": "x"}', "no workflow_id and audit list"),
        (b'{"workflow_id": "x", "audit": ["approve"]}', "audit[0] is not an object"),
    ],
)
def test_a_file_that_is_not_an_export_exits_2(tmp_path: Path, content: bytes, says: str):
    path = tmp_path / "bad.json"
    path.write_bytes(content)
    r = run(str(path))
    assert r.exit_code == 2, r.output
    assert r.stdout == ""
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and says in err[0] and err[0].startswith("deployctl: "), err


def test_a_missing_file_exits_2(tmp_path: Path):
    r = run(str(tmp_path / "nope.json"))
    assert r.exit_code == 2 and "cannot read" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_verify_export_refuses_what_is_not_an_export():
    with pytest.raises(NotAnExport, match="not an audit export"):
        verify_export({"audit": []})


# ------------------------------------------------------------------------------ plain ssh-keygen


def keygen_verify(command: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run a printed command the way a person would paste it, with /usr/bin/ssh-keygen."""
    command = (
        command.replace("ssh-keygen ", f"{SSH_KEYGEN} ", 1) if command.startswith("ssh-keygen") else command
    )
    return subprocess.run(
        ["/bin/sh", "-c", command.replace("\nssh-keygen ", f"\n{SSH_KEYGEN} ")],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.mark.parametrize("index, actor", [(START_INDEX, OWNER), (APPROVE_INDEX, SRE1)])
def test_explain_files_verify_with_plain_ssh_keygen(
    tmp_path: Path, good: dict[str, Any], index: int, actor: str
):
    out = tmp_path / "explain"
    r = run(write(tmp_path, good), "--explain", str(index), "--out", str(out))
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in out.iterdir()) == ["allowed_signers", "message", "message.sig"]
    entry = good["audit"][index]
    assert (out / "message").read_bytes() == signing.canonical(entry["payload"])
    assert (out / "allowed_signers").read_text() == f'{actor} namespaces="deployctl" {entry["key"]}\n'
    command = next(ln for ln in r.stdout.splitlines() if ln.startswith("ssh-keygen -Y verify"))
    assert command == ssh_keygen_check_command(entry, out)
    assert "this entry verifies" in r.stdout

    done = keygen_verify(command, tmp_path)
    assert done.returncode == 0, done.stderr
    fp = signing.fingerprint(entry["key"])
    assert f'Good "deployctl" signature for {actor} with ED25519 key {fp}' in done.stdout + done.stderr

    # The same command refuses a message that is not what was signed.
    (out / "message").write_bytes(signing.canonical({**entry["payload"], "comment": "edited"}))
    done = keygen_verify(command, tmp_path)
    assert done.returncode != 0 and "Good" not in done.stdout + done.stderr


def test_the_self_contained_script_verifies_with_plain_ssh_keygen(tmp_path: Path, good: dict[str, Any]):
    entry = good["audit"][APPROVE_INDEX]
    script = ssh_keygen_check_command(entry)
    assert "ssh-keygen -Y verify -f allowed_signers -I U0SRE1 -n deployctl -s message.sig < message" in script
    done = keygen_verify(script, tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "message").read_bytes() == signing.canonical(entry["payload"])
    assert 'Good "deployctl" signature for U0SRE1' in done.stdout + done.stderr


def test_explain_a_failing_or_unsigned_entry(tmp_path: Path, good: dict[str, Any]):
    doc = tampered(good)
    doc["audit"][APPROVE_INDEX]["payload"]["comment"] = "edited"
    path = write(tmp_path, doc)
    r = run(path, "--explain", str(APPROVE_INDEX), "--out", str(tmp_path / "x"))
    assert r.exit_code == 3 and "this entry FAILS: the signature does not verify" in r.stdout, r.output
    assert (
        keygen_verify(
            ssh_keygen_check_command(doc["audit"][APPROVE_INDEX], tmp_path / "x"), tmp_path
        ).returncode
        != 0
    )
    r = run(path, "--explain", "2")  # the refused, unsigned action
    assert r.exit_code == 2 and "carries no signature" in r.stderr, r.output
    r = run(path, "--explain", "9")
    assert r.exit_code == 2 and "audit[0] to audit[3]" in r.stderr, r.output
