"""The signing wrapper around a transport: a state change stays the CloudEvent other
services read, with its signature beside it, checkable with the coordinator's public
key alone (the recipe in docs/triggers.md)."""

from __future__ import annotations

import json
from typing import Any

from contracts.ports import Delivery
from contracts.signing import SIGNATURE_HEADER, SIGNER_HEADER, KeyRing, Role
from conveyor.keys import new_key_sets
from conveyor.signing import SigningConsumer, SigningTransport
from engine.transport.memory import MemoryTransport
from tests.test_docs import ROOT, blocks

CHANGE = json.dumps(
    {"specversion": "1.0", "type": "dev.conveyor.run.succeeded", "subject": "r1", "data": {}}
).encode()


async def first(consumer: object) -> Delivery:
    async for delivery in consumer:  # type: ignore[attr-defined]
        return delivery  # type: ignore[no-any-return]
    raise AssertionError("nothing delivered")


def checks_as_documented(public_entry: str, body: bytes, signature: str) -> bool:
    """What another service does with the header and the coordinator's public key: the
    function docs/triggers.md gives for it."""
    (code,) = [c for c in blocks(ROOT / "docs" / "triggers.md", "python") if "cvsig1" in c]
    namespace: dict[str, Any] = {}
    exec(code, namespace)
    _role, key_id, _kind, public = public_entry.split(":", 3)
    return bool(namespace["from_the_coordinator"](body, signature, key_id, public))


async def test_a_state_change_keeps_its_body_and_is_signed_beside_it() -> None:
    sets = new_key_sets()
    inner = MemoryTransport()
    await inner.start()
    coordinator = SigningTransport(
        inner, KeyRing.parse(sets[Role.COORDINATOR]), Role.COORDINATOR, frozenset(Role)
    )
    client = SigningTransport(
        inner, KeyRing.parse(sets[Role.CLIENT]), Role.CLIENT, frozenset({Role.COORDINATOR})
    )
    await inner.bind_announcements("theirs", "run.#")
    await inner.bind_announcements("ours", "run.#")
    await coordinator.announce("run.etl.succeeded", CHANGE)

    theirs = await first(await inner.consume("theirs", prefetch=1))
    assert theirs.body == CHANGE  # JSON as it was, not behind a signature line
    public_entry = next(e for e in sets[Role.CLIENT].split(",") if e.startswith("coordinator:"))
    assert checks_as_documented(public_entry, theirs.body, theirs.headers[SIGNATURE_HEADER])

    ours = await first(await client.consume("ours", prefetch=1))
    assert ours.body == CHANGE and ours.headers[SIGNER_HEADER] == "coordinator"


async def test_a_changed_body_or_a_missing_signature_is_refused() -> None:
    sets = new_key_sets()
    inner = MemoryTransport()
    await inner.start()
    keys = KeyRing.parse(sets[Role.COORDINATOR])
    signature = keys.signature(Role.COORDINATOR, CHANGE).decode()
    forged = CHANGE.replace(b"succeeded", b"failed")
    await inner.publish("ours", [forged], {SIGNATURE_HEADER: signature})
    await inner.publish("ours", [CHANGE])
    await inner.publish("ours", [CHANGE], {SIGNATURE_HEADER: signature})
    consumer = SigningConsumer(
        await inner.consume("ours", prefetch=3),
        KeyRing.parse(sets[Role.CLIENT]),
        frozenset({Role.COORDINATOR}),
    )
    opened = await first(consumer)
    assert opened.body == CHANGE and opened.headers[SIGNER_HEADER] == "coordinator"
    assert consumer.refused == 2
    assert [body for body, _ in await inner.dead_letters()] == [forged, CHANGE]
    public_entry = next(e for e in sets[Role.WORKER].split(",") if e.startswith("coordinator:"))
    assert checks_as_documented(public_entry, CHANGE, signature)
    assert not checks_as_documented(public_entry, forged, signature)
