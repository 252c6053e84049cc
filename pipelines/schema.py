"""The schema machinery of params.yaml: strict models, and a validation error as one line
naming the key (an unknown key with the closest valid one)."""

from __future__ import annotations

import difflib
import types
import typing
from typing import Annotated

from pydantic import BaseModel, ConfigDict, ValidationError


class Strict(BaseModel):
    """A params.yaml mapping: unknown keys are errors, values are read-only."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ParamsError(ValueError):
    """params.yaml is invalid; the message is one line naming the key."""


def _fields_at(schema: type[BaseModel], loc: tuple) -> list[str]:
    """The keys a mapping at `loc` (inside a document of `schema`) may have."""
    node: object = schema
    for part in loc:
        while typing.get_origin(node) in (typing.Union, types.UnionType, Annotated):
            node = next(a for a in typing.get_args(node) if a is not type(None))
        if isinstance(node, type) and issubclass(node, BaseModel):
            if part not in node.model_fields:
                return []
            node = node.model_fields[part].annotation
        elif typing.get_origin(node) is dict:
            node = typing.get_args(node)[1]
        else:
            return []
    while typing.get_origin(node) in (typing.Union, types.UnionType):
        node = next(a for a in typing.get_args(node) if a is not type(None))
    return list(node.model_fields) if isinstance(node, type) and issubclass(node, BaseModel) else []


def one_line(error: ValidationError, schema: type[BaseModel], prefix: str = "") -> str:
    """The first problem of `error`, unknown keys first (a renamed key is also a missing
    one): `where: message (got value)`, an unknown key with the closest valid one."""
    problems = sorted(error.errors(), key=lambda e: e["type"] != "extra_forbidden")
    first = problems[0]
    where = ".".join(str(p) for p in (prefix, *first["loc"]) if p != "")
    if first["type"] == "extra_forbidden":
        valid = _fields_at(schema, first["loc"][:-1])
        close = difflib.get_close_matches(str(first["loc"][-1]), valid, n=1, cutoff=0.6)
        hint = f"did you mean `{close[0]}`?" if close else f"known: {', '.join(valid)}" if valid else ""
        return f"`{where}`: unknown key" + (f"; {hint}" if hint else "")
    message = first["msg"].removeprefix("Value error, ")
    got = f" (got {first['input']!r})" if first["type"] not in ("missing",) and \
        not isinstance(first["input"], dict) else ""
    return f"{where}: {message}{got}"


def validate_as(schema: type[BaseModel], raw: object, source: str, prefix: str = ""):
    """`raw` validated as `schema`; else a ParamsError of one line: `<source>: <prefix>.<key>: ...`."""
    try:
        return schema.model_validate(raw)
    except ValidationError as e:
        raise ParamsError(f"{source}: {one_line(e, schema, prefix)}") from None
