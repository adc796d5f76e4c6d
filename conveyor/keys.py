"""New signing keys for a deployment: for each kind of process, the keys it needs.

A shared secret lets whoever checks with it sign with it too. So the coordinator
signs with an Ed25519 key, whose public half is all that workers and clients hold;
workers and clients sign with shared secrets, held besides only by the coordinators,
which are trusted with everything (docs/security.md).
"""

from __future__ import annotations

import base64
import secrets

from contracts.signing import ED25519_PRIVATE, ED25519_PUBLIC, Role

SETTINGS = {
    Role.COORDINATOR: "CONVEYOR_COORDINATOR_KEYS",
    Role.WORKER: "CONVEYOR_WORKER_KEYS",
    Role.CLIENT: "CONVEYOR_CLIENT_KEYS",
}
"""Where ``conveyor keys new`` puts each role's ``CONVEYOR_SIGNING_KEYS``."""


def new_pair() -> tuple[str, str]:
    """A new Ed25519 key pair as the setting writes them: (private, public)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    private = ed25519.Ed25519PrivateKey.generate()
    raw = serialization.Encoding.Raw
    private_bytes = private.private_bytes(
        raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    public_bytes = private.public_key().public_bytes(raw, serialization.PublicFormat.Raw)
    return (
        ED25519_PRIVATE + base64.b64encode(private_bytes).decode(),
        ED25519_PUBLIC + base64.b64encode(public_bytes).decode(),
    )


def new_key_sets() -> dict[Role, str]:
    """Each role's ``CONVEYOR_SIGNING_KEYS``: its own signing key, and the keys that
    check the messages it takes."""
    private, public = new_pair()
    coordinator = f"{Role.COORDINATOR}:c-{secrets.token_hex(3)}"
    worker = f"{Role.WORKER}:w-{secrets.token_hex(3)}:{secrets.token_hex(16)}"
    client = f"{Role.CLIENT}:u-{secrets.token_hex(3)}:{secrets.token_hex(16)}"
    return {
        Role.COORDINATOR: f"{coordinator}:{private},{worker},{client}",
        Role.WORKER: f"{worker},{coordinator}:{public}",
        Role.CLIENT: f"{client},{coordinator}:{public}",
    }
