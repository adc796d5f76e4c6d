"""The run index's rows on Redis: a run's summary hash, its fields and back."""

from __future__ import annotations

from contracts.ports import RunSummary


def row_fields(row: RunSummary) -> dict[str, str]:
    return {
        "workflow": row.workflow,
        "state": row.state,
        "submitted_at": repr(row.submitted_at),
        "finished_at": "" if row.finished_at is None else repr(row.finished_at),
        "reason": row.reason,
        "trigger": row.trigger,
        "shard": "" if row.shard is None else str(row.shard),
    }


def row_from(run_id: str, raw: dict[bytes, bytes]) -> RunSummary:
    finished = raw.get(b"finished_at", b"").decode()
    return RunSummary(
        run_id=run_id,
        workflow=raw[b"workflow"].decode(),
        state=raw[b"state"].decode(),
        submitted_at=float(raw[b"submitted_at"]),
        finished_at=float(finished) if finished else None,
        reason=raw.get(b"reason", b"").decode(),
        trigger=raw.get(b"trigger", b"").decode(),
        shard=int(raw[b"shard"]) if raw.get(b"shard") else None,
    )
