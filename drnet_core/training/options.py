"""Command-line options: argument types, and the flags derived from a config dataclass's fields.

Every `TrainConfig` field is a `train` flag of the same name (`--tau-start` for `tau_start`): its type
comes from the field's annotation, its help (and, where it has them, its choices and its parser) from
the field's metadata (`config.described`). A new field is a new flag, with nothing to keep in step.
"""
from __future__ import annotations

import argparse
import types
import typing
from dataclasses import fields


def float_list(text: str) -> list[float]:
    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def tau_arg(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"tau must be > 0, got {text}")
    return value


def threshold_arg(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"threshold must be in [0, 1], got {text}")
    return value


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


def branch_names_arg(text: str) -> tuple[str, ...]:
    from drnet_core.net.ops import OPS

    names = tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = [name for name in names if name not in OPS]
    if unknown or not names or len(set(names)) < len(names):
        problem = (f"unknown {', '.join(map(repr, unknown))}" if unknown else
                   "no branch named" if not names else "a branch named twice")
        raise argparse.ArgumentTypeError(f"{problem}; expected comma-separated branch types from: {', '.join(OPS)}")
    return names


def flag_name(field_name: str) -> str:
    return "--" + field_name.replace("_", "-")


def _value_type(annotation) -> type:
    """`int | None` -> int: an optional field's flag parses the value it holds when given."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        (kind,) = [member for member in typing.get_args(annotation) if member is not type(None)]
        return kind
    return annotation


def add_config_flags(parser: argparse.ArgumentParser, config_class, only: tuple[str, ...] | None = None) -> None:
    """One flag per field of `config_class` (or of the fields named in `only`), each defaulting to None:
    a flag not given leaves the preset's value."""
    annotations = typing.get_type_hints(config_class)
    for field in fields(config_class):
        if only is not None and field.name not in only:
            continue
        if "help" not in field.metadata:
            raise TypeError(f"{config_class.__name__}.{field.name} has no help text for its flag "
                            "(declare it with config.described)")
        kind = _value_type(annotations[field.name])
        help_text = field.metadata["help"] + " (default: the preset's)"
        if kind is bool:
            parser.add_argument(flag_name(field.name), action=argparse.BooleanOptionalAction, default=None,
                                help=help_text)
            continue
        choices = field.metadata.get("choices")
        parser.add_argument(flag_name(field.name), type=field.metadata.get("parse", kind), default=None,
                            choices=choices() if callable(choices) else choices, help=help_text)


def config_overrides(args: argparse.Namespace, config_class, only: tuple[str, ...] | None = None) -> dict:
    """The fields of `config_class` given on the command line, by name."""
    names = [field.name for field in fields(config_class) if only is None or field.name in only]
    return {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}
