"""What each process must hold to sign and check messages, told at its start."""

from __future__ import annotations

from pathlib import Path

import pytest

from contracts.errors import InvalidInput
from contracts.signing import KeyRing, Role
from conveyor.keys import SETTINGS, new_key_sets
from conveyor.settings import Settings
from conveyor.wiring import signing_keys
from tests.test_docs import run_cli


def _settings(keys: str) -> Settings:
    return Settings(signing_keys=keys)


def test_each_role_starts_with_its_own_set() -> None:
    sets = new_key_sets()
    for role in Role:
        ring = signing_keys(_settings(sets[role]), role)
        assert ring is not None and role in ring.signers()


@pytest.mark.parametrize(
    ("role", "given", "says"),
    [
        # A worker's set given to a coordinator: it holds only the coordinator's public key.
        (
            Role.COORDINATOR,
            Role.WORKER,
            "no key to sign as the coordinator role (only a public key)",
        ),
        (Role.COORDINATOR, Role.WORKER, "no key to check the client role's messages with"),
        (Role.WORKER, Role.CLIENT, "no key to sign as the worker role"),
        (Role.CLIENT, Role.WORKER, "no key to sign as the client role"),
    ],
)
def test_a_set_missing_what_the_role_needs_is_refused(role: Role, given: Role, says: str) -> None:
    with pytest.raises(InvalidInput, match="CONVEYOR_SIGNING_KEYS") as refused:
        signing_keys(_settings(new_key_sets()[given]), role)
    assert says in str(refused.value)


def test_a_worker_without_the_coordinator_s_key_is_refused() -> None:
    with pytest.raises(InvalidInput) as refused:
        signing_keys(_settings("worker:w1:worker-secret-000001"), Role.WORKER)
    assert "no key to check the coordinator role's messages with" in str(refused.value)


def test_conveyor_keys_new_prints_an_env_file_of_three_sets(tmp_path: Path) -> None:
    printed = run_cli("keys", "new", cwd=tmp_path).stdout
    lines = dict(line.split("=", 1) for line in printed.splitlines())
    assert set(lines) == set(SETTINGS.values())
    rings = {role: KeyRing.parse(lines[name]) for role, name in SETTINGS.items()}
    assert rings[Role.WORKER].signers() == {Role.WORKER}
    signed = rings[Role.COORDINATOR].sign(Role.COORDINATOR, b"task")
    assert rings[Role.WORKER].open(signed, {Role.COORDINATOR}) == (Role.COORDINATOR, b"task")


def test_keys_go_to_a_new_file_readable_by_its_owner_only(tmp_path: Path) -> None:
    target = tmp_path / "conveyor-keys.env"
    made = run_cli("keys", "new", "--out", str(target), cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    assert target.stat().st_mode & 0o777 == 0o600
    written = target.read_text()
    assert set(dict(line.split("=", 1) for line in written.splitlines())) == set(SETTINGS.values())
    # Keys in use are never replaced by new ones.
    again = run_cli("keys", "new", "--out", str(target), cwd=tmp_path)
    assert again.returncode == 2
    assert f"{target}: cannot create it: File exists" in again.stderr
    assert target.read_text() == written


def test_a_server_needs_the_coordinator_s_key_to_hear_its_state_changes() -> None:
    """A command only sends; a server's notifications open the coordinators' state
    changes, so without a key to check them it does not start."""
    alone = _settings("client:u1:client-secret-000001")
    assert signing_keys(alone, Role.CLIENT) is not None
    with pytest.raises(InvalidInput) as refused:
        signing_keys(alone, Role.CLIENT, frozenset({Role.COORDINATOR}))
    assert "no key to check the coordinator role's messages with" in str(refused.value)
    assert signing_keys(_settings(new_key_sets()[Role.CLIENT]), Role.CLIENT) is not None
