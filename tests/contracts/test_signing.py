"""Message signatures: what opens, what does not, and how keys rotate."""

from __future__ import annotations

import pytest

from contracts.errors import InvalidInput
from contracts.signing import KeyRing, Role, SignatureError

KEYS = KeyRing.parse(
    "coordinator:k2:coordinator-secret-2,coordinator:k1:coordinator-secret-1,"
    "worker:w1:worker-secret-000000,client:c1:client-secret-000000"
)
ALL = frozenset(Role)


def test_a_signed_message_opens_for_an_accepted_role() -> None:
    signed = KEYS.sign(Role.WORKER, b'{"type":"task_started"}')
    assert KEYS.open(signed, ALL) == (Role.WORKER, b'{"type":"task_started"}')
    with pytest.raises(SignatureError, match="a worker may not send here"):
        KEYS.open(signed, {Role.COORDINATOR})


@pytest.mark.parametrize(
    "tamper",
    [
        lambda m: m.replace(b"task_started", b"task_succeeded"),  # body changed
        lambda m: m.replace(b"worker w1", b"coordinator k2"),  # claims another role
        lambda m: m.split(b"\n", 1)[1],  # signature stripped
        lambda m: m[:-3] + b"xyz",
        lambda m: b"cvsig1 worker\n" + m,
    ],
    ids=["body", "role", "unsigned", "truncated", "malformed"],
)
def test_anything_changed_or_unsigned_does_not_open(tamper: object) -> None:
    signed = KEYS.sign(Role.WORKER, b'{"type":"task_started"}')
    with pytest.raises(SignatureError):
        KEYS.open(tamper(signed), ALL)  # type: ignore[operator]


def test_a_stranger_s_key_does_not_open() -> None:
    stranger = KeyRing.parse("worker:w1:not-the-same-secret-at-all")
    with pytest.raises(SignatureError, match="bad signature"):
        KEYS.open(stranger.sign(Role.WORKER, b"x"), ALL)


def test_keys_rotate_the_first_signs_and_all_verify() -> None:
    old = KeyRing.parse("coordinator:k1:coordinator-secret-1")
    assert KEYS.open(old.sign(Role.COORDINATOR, b"x"), ALL) == (Role.COORDINATOR, b"x")
    assert b" k2 " in KEYS.sign(Role.COORDINATOR, b"x")


def test_bad_key_settings_are_refused() -> None:
    with pytest.raises(InvalidInput, match="CONVEYOR_SIGNING_KEYS"):
        KeyRing.parse("admin:a:secret-secret-secret")
    with pytest.raises(InvalidInput, match="16 characters or more"):
        KeyRing.parse("worker:w1:short")


PAIR_PRIVATE = "ed25519-private:" + "A" * 43 + "="
"""A fixed Ed25519 private key (32 zero bytes): what the setting holds on coordinators."""


def test_a_key_pair_s_private_half_signs_and_its_public_half_only_checks() -> None:
    from conveyor.keys import new_pair

    private, public = new_pair()
    signer = KeyRing.parse(f"coordinator:c1:{private}")
    checker = KeyRing.parse(f"coordinator:c1:{public}")
    signed = signer.sign(Role.COORDINATOR, b'{"type":"task_ready"}')
    assert checker.open(signed, ALL) == (Role.COORDINATOR, b'{"type":"task_ready"}')
    assert signer.open(signed, ALL) == (Role.COORDINATOR, b'{"type":"task_ready"}')
    assert checker.signers() == set() and checker.roles() == {Role.COORDINATOR}
    with pytest.raises(SignatureError, match="no key here signs as coordinator"):
        checker.sign(Role.COORDINATOR, b"x")


@pytest.mark.parametrize(
    "tamper",
    [
        lambda m: m.replace(b"task_ready", b"task_xeady"),
        lambda m: m.replace(b"coordinator c1", b"worker c1"),
        lambda m: m.split(b"\n", 1)[1],
        lambda m: m[:-3] + b"xyz",
        lambda m: m.replace(b" c1 ", b" c1 00"),
        lambda m: m.replace(b" c1 ", b" c1 zz"),
    ],
    ids=["body", "role", "unsigned", "truncated", "tag-longer", "tag-not-hex"],
)
def test_anything_changed_in_a_pair_signed_message_does_not_open(tamper: object) -> None:
    from conveyor.keys import new_pair

    private, public = new_pair()
    checker = KeyRing.parse(f"coordinator:c1:{public},worker:c1:{public}")
    signed = KeyRing.parse(f"coordinator:c1:{private}").sign(Role.COORDINATOR, b"task_ready")
    with pytest.raises(SignatureError):
        checker.open(tamper(signed), ALL)  # type: ignore[operator]


def test_another_pair_under_the_coordinator_s_key_id_does_not_open() -> None:
    """What a worker's host could try: its own key pair, named as the coordinator's."""
    from conveyor.keys import new_pair

    (_, public), (forger, _) = new_pair(), new_pair()
    forged = KeyRing.parse(f"coordinator:c1:{forger}").sign(Role.COORDINATOR, b"task_ready")
    with pytest.raises(SignatureError, match="bad signature"):
        KeyRing.parse(f"coordinator:c1:{public}").open(forged, ALL)


def test_a_role_without_a_key_here_is_named() -> None:
    worker_host = KeyRing.parse(
        "worker:w1:worker-secret-000000,coordinator:k1:coordinator-secret-1"
    )
    with pytest.raises(SignatureError, match="no key here checks a client's messages"):
        worker_host.open(KEYS.sign(Role.CLIENT, b"x"), ALL)


@pytest.mark.parametrize(
    ("entry", "says"),
    [
        (
            "coordinator:c1:ed25519-public:AAAA",
            "entry 1 (coordinator:c1:…): an ed25519-public key is 32 bytes",
        ),
        (
            "worker:w1:worker-secret-000001,coordinator:c1:ed25519-private:not*base64",
            "entry 2 (coordinator:c1:…): an ed25519-private key is 32 bytes",
        ),
        ("coordinator::" + PAIR_PRIVATE, "entry 1 (coordinator::…): expected role:key-id:KEY"),
    ],
)
def test_bad_pair_keys_are_refused_saying_which_entry(entry: str, says: str) -> None:
    with pytest.raises(InvalidInput, match="CONVEYOR_SIGNING_KEYS") as refused:
        KeyRing.parse(entry)
    assert says in str(refused.value)


def test_each_kind_of_process_gets_only_what_it_needs() -> None:
    from conveyor.keys import new_key_sets

    sets = {role: KeyRing.parse(text) for role, text in new_key_sets().items()}
    coordinator, worker, client = sets[Role.COORDINATOR], sets[Role.WORKER], sets[Role.CLIENT]
    # Coordinators are trusted with everything: a shared secret that checks also signs.
    assert coordinator.signers() == set(Role)
    assert coordinator.roles() == set(Role)
    assert worker.signers() == {Role.WORKER} and worker.roles() == {Role.WORKER, Role.COORDINATOR}
    assert client.signers() == {Role.CLIENT} and client.roles() == {Role.CLIENT, Role.COORDINATOR}
    # Each opens what it takes from the others.
    task = coordinator.sign(Role.COORDINATOR, b"task_ready")
    assert worker.open(task, {Role.COORDINATOR}) == (Role.COORDINATOR, b"task_ready")
    assert client.open(task, {Role.COORDINATOR}) == (Role.COORDINATOR, b"task_ready")
    for role, ring in ((Role.WORKER, worker), (Role.CLIENT, client)):
        assert coordinator.open(ring.sign(role, b"m"), ALL) == (role, b"m")
    # A worker's host can neither pass for the coordinator nor submit runs.
    for role in (Role.COORDINATOR, Role.CLIENT):
        with pytest.raises(SignatureError, match=f"no key here signs as {role}"):
            worker.sign(role, b"m")
    # New keys each time.
    assert new_key_sets()[Role.WORKER] != new_key_sets()[Role.WORKER]


def test_a_coordinator_key_pair_rotates_public_half_first() -> None:
    """New public half on the workers, then the new private half on the coordinators
    (first, so it signs), then the old one removed: nothing sent meanwhile is refused."""
    from conveyor.keys import new_pair

    (old_private, old_public), (new_private, new_public) = new_pair(), new_pair()
    coordinator = KeyRing.parse(f"coordinator:c1:{old_private}")
    worker = KeyRing.parse(f"coordinator:c2:{new_public},coordinator:c1:{old_public}")
    assert worker.open(coordinator.sign(Role.COORDINATOR, b"t"), ALL)[1] == b"t"
    coordinator = KeyRing.parse(f"coordinator:c2:{new_private},coordinator:c1:{old_private}")
    signed = coordinator.sign(Role.COORDINATOR, b"t")
    assert b" c2 " in signed and worker.open(signed, ALL)[1] == b"t"
    # A message signed with the old key before the switch still opens on a coordinator.
    old_signed = KeyRing.parse(f"coordinator:c1:{old_private}").sign(Role.COORDINATOR, b"t")
    assert coordinator.open(old_signed, ALL)[1] == b"t"
    with pytest.raises(SignatureError, match="bad signature"):
        KeyRing.parse(f"coordinator:c2:{new_public}").open(old_signed, ALL)
