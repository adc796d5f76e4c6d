"""Encoding a task's result in a chosen format, and decoding it for the task that takes it.

``json`` (the default) is data only. ``pickle`` runs code when it is read: use it only
between tasks of your own code; the worker reads it only from where a worker stored it
(``contracts.values``). ``parquet`` carries a pandas DataFrame (or a pyarrow Table) with
its column types, readable by any tool. ``jsonl`` writes a list (or any iterable, a
generator say) as JSON Lines, one item per line: a fan-out over it is fed item by item,
and the coordinator never holds the list whole.
"""

from __future__ import annotations

import io
import itertools
import json
import pickle
from collections.abc import Iterable
from typing import Any

import msgspec
from pydantic import TypeAdapter

from contracts.errors import NonRetryableError
from contracts.values import STREAMED_FORMAT, VALUE_FORMATS, EncodedValue, StoredValue


def check_format(value: Any, task: str) -> str:
    if value not in VALUE_FORMATS:
        raise TypeError(
            f"task {task!r}: result_serializer must be one of {', '.join(VALUE_FORMATS)},"
            f" not {value!r}"
        )
    return str(value)


def encode(value: Any, format: str, adapter: TypeAdapter[Any] | None) -> EncodedValue:
    if format == "pickle":
        return EncodedValue(pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL), format)
    if format == "parquet":
        return EncodedValue(_parquet(value), format)
    if format == STREAMED_FORMAT:
        return EncodedValue(_json_lines(value, adapter), format)
    if adapter is not None:
        return EncodedValue(adapter.dump_json(adapter.validate_python(value)), format)
    return EncodedValue(json.dumps(value).encode(), format)


def _json_lines(value: Any, adapter: TypeAdapter[Any] | None) -> bytes:
    if adapter is not None:
        value = adapter.dump_python(adapter.validate_python(value), mode="json")
    if isinstance(value, str | bytes | dict) or not isinstance(value, Iterable):
        raise NonRetryableError(
            f"a jsonl result is a list (or another iterable) of items, not {type(value).__name__}"
        )
    try:
        return b"".join(msgspec.json.encode(item) + b"\n" for item in value)
    except (TypeError, msgspec.EncodeError) as exc:
        raise NonRetryableError(f"a jsonl result's items must be JSON values: {exc}") from exc


def _parquet(value: Any) -> bytes:
    buffer = io.BytesIO()
    if hasattr(value, "to_parquet"):  # a pandas (or polars-like) DataFrame
        value.to_parquet(buffer)
        return buffer.getvalue()
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise NonRetryableError("parquet results need pyarrow (pip install pyarrow)") from exc
    if not isinstance(value, pa.Table):
        raise NonRetryableError(
            f"a parquet result must be a DataFrame or a pyarrow Table, not {type(value).__name__}"
        )
    pq.write_table(value, buffer)
    return buffer.getvalue()


def decode(value: StoredValue) -> Any:
    if value.format == "pickle":
        return pickle.loads(value.data)
    if value.format == "parquet":
        try:
            import pandas
        except ImportError as exc:
            raise NonRetryableError("parquet values need pandas (pip install pandas)") from exc
        return pandas.read_parquet(io.BytesIO(value.data))
    if value.format == STREAMED_FORMAT:
        return [msgspec.json.decode(line) for line in value.data.splitlines() if line]
    return json.loads(value.data)


def decoded(value: Any) -> Any:
    """``value`` with every stored value inside it (a fan-in's list) decoded; the value
    itself, not a copy, when it holds none (the case of nearly every argument)."""
    if isinstance(value, StoredValue):
        return decode(value)
    if not _holds(value):
        return value
    if isinstance(value, list):
        return [decoded(v) for v in value]
    return {k: decoded(v) for k, v in value.items()}


_HOLDERS = (StoredValue, list, dict)


def _holds(value: Any) -> bool:
    if isinstance(value, StoredValue):
        return True
    if isinstance(value, list):
        items: Any = value
    elif isinstance(value, dict):
        items = value.values()
    else:
        return False
    # The common case, a list of plain values, is settled by one pass in C.
    if not any(map(isinstance, items, itertools.repeat(_HOLDERS))):
        return False
    return any(_holds(v) for v in items)
