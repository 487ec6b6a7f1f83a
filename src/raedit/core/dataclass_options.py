"""Command-line options made from a config dataclass, so that a command's flags, defaults and choices are the
dataclass's and cannot drift from it: field `batch_size` becomes `--batch-size`, with the field's default, and the
help text, choices and metavar of its metadata (`help`, `choices`, `metavar`)."""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import types
import typing
from typing import Any, TypeVar

T = TypeVar("T")


def _parts(annotation: Any) -> tuple[Any, bool]:
    """(the type without None, whether None is allowed) of an annotation like `int | None`."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        members = [member for member in typing.get_args(annotation) if member is not type(None)]
        return members[0], len(members) < len(typing.get_args(annotation))
    return annotation, False


def add_options(parser: argparse.ArgumentParser, cls: type) -> None:
    """One option per field of the dataclass `cls`; a field without a default is a required option."""
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        kind, _ = _parts(hints[field.name])
        origin, args = typing.get_origin(kind), typing.get_args(kind)
        options: dict[str, Any] = {"dest": field.name, "help": field.metadata.get("help")}
        if field.metadata.get("choices"):
            options["choices"] = field.metadata["choices"]
        if field.metadata.get("metavar"):
            options["metavar"] = field.metadata["metavar"]
        if field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            options["required"] = True
        else:
            options["default"] = field.default if field.default is not dataclasses.MISSING else field.default_factory()
            if options["help"] is not None and kind is not bool and options["default"] is not None:
                options["help"] += " (default: %(default)s)"
        if kind is bool:
            options["action"] = argparse.BooleanOptionalAction
        elif origin is list:
            options.update(nargs="+", type=args[0])
        elif origin is tuple:
            options.update(nargs=len(args), type=args[0])
        else:
            options["type"] = kind
        parser.add_argument("--" + field.name.replace("_", "-"), **options)


def from_options(cls: type[T], args: argparse.Namespace) -> T:
    """The dataclass `cls` from the options `add_options` made; '' for an optional text field means None."""
    hints = typing.get_type_hints(cls)
    values = {}
    for field in dataclasses.fields(cls):
        value = getattr(args, field.name)
        kind, optional = _parts(hints[field.name])
        if typing.get_origin(kind) is tuple and value is not None:
            value = tuple(value)
        if optional and value == "":
            value = None
        values[field.name] = value
    return cls(**values)


def to_options(config: Any) -> list[str]:
    """The options that give back `config` through `add_options` and `from_options`: one for each field that
    differs from its default (and each required one), as separate command-line words."""
    hints = typing.get_type_hints(type(config))
    words: list[str] = []
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        has_default = field.default is not dataclasses.MISSING or field.default_factory is not dataclasses.MISSING
        default = field.default if field.default is not dataclasses.MISSING else (
            field.default_factory() if has_default else None)
        if has_default and value == default:
            continue
        flag = "--" + field.name.replace("_", "-")
        kind, _ = _parts(hints[field.name])
        if kind is bool:
            words.append(flag if value else "--no-" + field.name.replace("_", "-"))
        elif value is None:
            words += [flag, ""]
        elif isinstance(value, (list, tuple)):
            words += [flag, *(str(item) for item in value)]
        else:
            words += [flag, str(value)]
    return words


def command_line(program: str, config: Any) -> str:
    """`program` with `to_options(config)`, quoted for a POSIX shell."""
    return shlex.join([*program.split(), *to_options(config)])
