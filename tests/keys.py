"""Throwaway signing keys for the test people, made once per session (SPEC §9).

Every person the tests name gets an Ed25519 key in one directory, named by their user id; the test
configs list the public halves under `[people.*]`, and `DEPLOYCTL_SIGNING_KEY` points at the directory,
so the CLI's code path signs every action with the actor's own key, through real `ssh-keygen`.
"""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path

from starter.signing import throwaway_key

PEOPLE = (
    "U0OWNER1", "U0OWNER", "U0GATE1", "U0GATE2", "U0SRE1", "U0SRE2", "U0SRE3", "U0SREG1", "U0SREG2",
    "U0VP1", "U0BOB", "U0ALICE", "U0A", "U0B", "U0NOBODY", "U0OUTSIDE", "U0OTHER", "U0123ABCD",
)  # fmt: skip
BRIDGE = "slack-bridge"


@functools.cache
def key_dir() -> Path:
    """The directory of private keys, one per person (and the Slack bridge's), for this session."""
    directory = Path(tempfile.mkdtemp(prefix="deployctl-test-keys-"))
    for name in (*PEOPLE, BRIDGE):
        throwaway_key(directory, name)
    return directory


def public(name: str) -> str:
    return (key_dir() / f"{name}.pub").read_text().strip()


def private(name: str) -> str:
    return str(key_dir() / name)


@functools.cache
def people_toml() -> str:
    """`[people.*]` tables listing each test person's public key."""
    return "".join(f'\n[people.{p}]\nssh_keys = ["{public(p)}"]\n' for p in PEOPLE)
