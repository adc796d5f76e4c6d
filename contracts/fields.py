"""The fields a workflow document may have at a place in it, read from the spec's
models: what a misspelt field is compared with."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, get_args, get_origin

from pydantic import BaseModel

from contracts.spec import Workflow
from contracts.yamlsource import Path


def fields_at(path: Path) -> list[str]:
    """The field names a workflow document may have in the mapping at ``path``."""
    shapes: list[Any] = [Workflow]
    for part in path:
        if isinstance(part, int):
            continue  # lists are seen through by ``_shapes``
        following: list[Any] = []
        for shape in shapes:
            if isinstance(shape, _Values):  # a mapping's keys are names the user chose
                following += _shapes(shape.annotation)
                continue
            for name, field in shape.model_fields.items():
                if part in (name, field.alias):
                    following += _shapes(field.annotation)
        shapes = following
    return sorted(
        {
            field.alias or name
            for shape in shapes
            if not isinstance(shape, _Values)
            for name, field in shape.model_fields.items()
        }
    )


class _Values:
    """The values of a mapping of the given type, in a walk of the models' fields."""

    def __init__(self, annotation: Any) -> None:
        self.annotation = annotation


def _shapes(annotation: Any) -> list[Any]:
    """The models and mappings a value of this type may be (unions and lists opened)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    origin = get_origin(annotation)
    if origin in (dict, Mapping):
        return [_Values(get_args(annotation)[1])]
    if origin is Annotated:
        return _shapes(get_args(annotation)[0])
    return [shape for arg in get_args(annotation) for shape in _shapes(arg)]
