"""Command-line options generated from dataclass fields, so that each setting is declared once:
its name, type, default and help live on the field (`setting(...)`), and the `tfdeeplab`
subcommands and the Python API read the same declaration.
"""

import argparse
import dataclasses
import types
import typing


def setting(default=dataclasses.MISSING, help="", *, choices=None, parse=None):
    """A dataclass field with its command-line help.

    Args:
        default: the default (MISSING: the field is required, in Python and on the command
            line).
        help: one line for `--help`.
        choices: the allowed values on the command line.
        parse: a function from the command-line string to the value (default: the field type).
    """
    metadata = {"help": help, "choices": choices, "parse": parse}
    return dataclasses.field(default=default, metadata=metadata)


def int_list(text):
    """A command-line list of integers, "0,5" → (0, 5); "" → ()."""
    try:
        return tuple(int(value) for value in text.split(",") if value.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a comma-separated list of integers, e.g. 0,5"
        ) from None


def parse_aspp_rates(text):
    """--aspp-rates: "auto", "none" (no 3×3 branch: image pooling + the 1×1 branch, DeepLab's
    mobile head) → (), or a comma-separated list "6,12,18" → (6, 12, 18)."""
    if text in ("auto", "none"):
        return "auto" if text == "auto" else ()
    rates = int_list(text)
    if not rates:
        raise argparse.ArgumentTypeError("give auto, none or rates such as 6,12,18")
    return rates


def _value_type(annotation):
    """int for `int` and `int | None`; the first non-None member of a union."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        return members[0]
    return annotation


def add_arguments(parser, cls, names=None, defaults=None):
    """Adds one `--option` per field of dataclass `cls` (only `names`, if given, in that order),
    with the field's help and default (`defaults` overrides some); bool fields get
    `--name / --no-name`."""
    fields = {field.name: field for field in dataclasses.fields(cls) if field.metadata}
    defaults = defaults or {}
    for name in names or fields:
        field = fields[name]
        meta = field.metadata
        default = defaults.get(name, field.default)
        options = {"dest": name, "help": meta["help"]}
        kind = _value_type(field.type)
        if kind is bool:
            options["action"] = argparse.BooleanOptionalAction
        else:
            options["type"] = meta["parse"] or kind
            options["choices"] = meta["choices"]
            options["metavar"] = name.upper() if meta["choices"] is None else None
        if default is dataclasses.MISSING:
            options["required"] = True
        else:
            options["default"] = default
            if default is not None and "default" not in options["help"]:
                options["help"] += " (default: %(default)s)"
        parser.add_argument("--" + name.replace("_", "-"), **options)


def values(cls, args, names=None, exclude=()):
    """{field: value} of dataclass `cls`'s command-line fields found in the parsed `args` (only
    `names`, if given; none of `exclude`)."""
    fields = [field.name for field in dataclasses.fields(cls) if field.metadata]
    return {
        name: getattr(args, name)
        for name in fields
        if hasattr(args, name) and (names is None or name in names) and name not in exclude
    }
