"""Command-line options generated from the config dataclasses (`n2sr.config`): one
``--field-name`` per field, so a config key, its option and the field are one name and cannot
drift; the types and choices come from the field's annotation."""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from typing import Any, Callable, Sequence


def _option_type(tp: Any) -> tuple[Any, Sequence[Any] | None]:
    """argparse type and choices for a dataclass field annotation."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        words = [w for a in args if typing.get_origin(a) is typing.Literal for w in typing.get_args(a)]
        if int in args and words:  # e.g. tile_size: an int or "auto"
            return _int_or(words), None
        if bool in args and words:  # e.g. whiten: true, false or "auto"
            return _bool_or(words), None
        return _option_type(args[0])
    if origin is typing.Literal:
        choices = typing.get_args(tp)
        return type(choices[0]), choices
    return tp, None


def add_dataclass_options(parser: argparse.ArgumentParser, cls: type, prefix: str = "") -> None:
    """One ``--[prefix-]field-name`` option per field; defaults stay in the dataclass."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            continue
        flag = "--" + (f"{prefix}-" if prefix else "") + f.name.replace("_", "-")
        tp, choices = _option_type(hints[f.name])
        default = f.default if f.default is not dataclasses.MISSING else None
        if tp is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=f"(default: {default})")
        elif getattr(tp, "words", None):  # --flag, --no-flag or --flag WORD
            dest = flag[2:].replace("-", "_")
            parser.add_argument(flag, type=tp, nargs="?", const=True, default=None, dest=dest,
                                help=f"true, false or {'/'.join(tp.words)} (default: {default})")
            parser.add_argument("--no-" + flag[2:], dest=dest, action="store_const", const=False)
        else:
            parser.add_argument(flag, type=tp, choices=choices, default=None, help=f"(default: {default})")


def _int_or(words: Sequence[str]) -> Callable[[str], int | str]:
    """argparse type for a number or one of `words`."""
    def parse(text: str) -> int | str:
        if text in words:
            return text
        try:
            return int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer or one of {', '.join(words)}, got {text!r}") from None

    parse.__name__ = "int or " + "/".join(words)
    return parse


def _bool_or(words: Sequence[str]) -> Callable[[str], bool | str]:
    """argparse type for true/false or one of `words`."""
    def parse(text: str) -> bool | str:
        if text in words:
            return text
        if text.lower() in ("true", "false"):
            return text.lower() == "true"
        raise argparse.ArgumentTypeError(f"expected true, false or {', '.join(words)}, got {text!r}")

    parse.__name__ = "true/false or " + "/".join(words)
    parse.words = tuple(words)  # type: ignore[attr-defined]
    return parse


def collect(ns: argparse.Namespace, cls: type, prefix: str = "", **extra: Any) -> Any:
    """Build ``cls`` from the options the user gave, leaving the rest at their defaults."""
    dest = (lambda name: f"{prefix}_{name}") if prefix else (lambda name: name)
    values = {f.name: getattr(ns, dest(f.name)) for f in dataclasses.fields(cls)
              if getattr(ns, dest(f.name), None) is not None}
    return cls(**values, **extra)
