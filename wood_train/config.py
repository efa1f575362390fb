"""Frozen dataclass configs: presets, command-line overrides, YAML round trip, provenance.

Every stage (world, train, cam, evaluate, mine, ...) takes one frozen dataclass whose fields are
declared with ``config_field``. The CLI adds one ``--field-name`` option per field (booleans as
``--name`` / ``--no-name``), so every value can be set from the command line, and the resolved
config is written beside each output together with the git SHA and package versions::

    @dataclass(frozen=True)
    class CamConfig:
        checkpoint: Path | None = config_field(None, "trained CamNet checkpoint")
        scales: tuple[float, ...] = config_field((1.0, 0.5), "inference scales")

    add_config_args(parser, CamConfig)             # --checkpoint, --scales ...
    config = replace(preset, **overrides_from_args(args, CamConfig))
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import json
import platform
import subprocess
import typing
from importlib import metadata
from pathlib import Path
from typing import Any, TypeVar

import yaml

from wood_train.errors import ConfigError, MissingInputError

T = TypeVar("T")

_MISSING = object()


def config_field(
    default: Any, help: str, *, flag: str | None = "", required: bool = False, repeat: bool = False
):
    """A config dataclass field with its command-line help.

    Parameters
    ----------
    default
        The field's default (a tuple for sequences; configs are frozen).
    help
        One line for ``--help``.
    flag
        ``""`` (default): the flag is ``--field-name``. A string such as ``"--out"``: that flag
        instead. ``None``: the field is not on the command line (set by code or YAML only).
    required
        The command refuses to run without a value (checked where the config is used; the flag
        itself stays optional so a YAML ``--config`` can supply it).
    repeat
        For a tuple field: the flag may be given more than once and the values add up
        (``--tags-csv a.csv --tags-csv b.csv``); otherwise the last one wins.
    """
    return dataclasses.field(
        default=default,
        metadata={"help": help, "flag": flag, "required": required, "repeat": repeat},
    )


class _ExtendAction(argparse.Action):
    """``action="extend"`` that starts from an empty list (the default here is a sentinel)."""

    def __call__(self, parser, namespace, values, option_string=None):
        current = getattr(namespace, self.dest, _MISSING)
        items = [] if current is _MISSING else list(current)
        setattr(namespace, self.dest, items + list(values))


def field_help(cls: type, name: str) -> str:
    """The help text of one config field (for docs and error messages)."""
    return next(f.metadata.get("help", "") for f in dataclasses.fields(cls) if f.name == name)


def flag_name(cls: type, name: str) -> str:
    """The command-line flag of a config field, e.g. ``--num-centers``."""
    field = next(f for f in dataclasses.fields(cls) if f.name == name)
    return field.metadata.get("flag") or "--" + name.replace("_", "-")


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _parse_scalar(kind: Any, text: str) -> Any:
    if kind is bool:
        lowered = text.lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")
    if kind in (int, float, str, Path):
        return kind(text)
    return text


def _converter(hint: Any):
    """Return (argparse type, nargs) for a dataclass field's type hint."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1:
            conv, nargs = _converter(inner[0])

            def optional(text: str, _conv=conv):
                return None if text.lower() in ("none", "null", "") else _conv(text)

            return optional, nargs
    if origin is tuple:
        item = args[0] if args else str
        return (lambda text, _k=item: _parse_scalar(_k, text)), "*"
    return (lambda text, _k=hint: _parse_scalar(_k, text)), None


def add_config_args(
    parser: argparse.ArgumentParser, cls: type, skip: tuple[str, ...] = (), title: str = ""
) -> None:
    """Add one option per dataclass field (default: keep the preset's value).

    Booleans become ``--name`` / ``--no-name`` (``argparse.BooleanOptionalAction``); tuples take
    several values (``--scales 1.0 0.5``); ``Path | None`` fields accept ``none``.
    """
    hints = _field_types(cls)
    group = parser.add_argument_group(title or f"{cls.__name__} fields (override the preset)")
    for field in dataclasses.fields(cls):
        if field.name in skip or field.metadata.get("flag", "") is None:
            continue
        help_text = field.metadata.get("help", "")
        default = field.default if field.default is not dataclasses.MISSING else None
        if field.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            default = field.default_factory()  # type: ignore[misc]
        flag = flag_name(cls, field.name)
        if hints[field.name] is bool:
            group.add_argument(
                flag,
                dest=field.name,
                action=argparse.BooleanOptionalAction,
                default=_MISSING,
                help=f"{help_text} (default: {'on' if default else 'off'})".strip(),
            )
            continue
        conv, nargs = _converter(hints[field.name])
        repeat = field.metadata.get("repeat", False) and nargs == "*"
        group.add_argument(
            flag,
            dest=field.name,
            type=conv,
            nargs="+" if repeat else nargs,
            action=_ExtendAction if repeat else "store",
            default=_MISSING,
            metavar=field.name.upper() if nargs is None else "V",
            help=f"{help_text} (default: {default}{'; may be repeated' if repeat else ''})".strip(),
        )


def add_stage_args(
    parser: argparse.ArgumentParser,
    cls: type,
    presets: dict[str, Any] | None = None,
    default_preset: str | None = None,
) -> None:
    """The options every stage shares: ``--preset`` (when it has presets), ``--config FILE`` (a
    saved config.yaml or JSON, which flags override) and one option per ``cls`` field."""
    if presets:
        parser.add_argument(
            "--preset",
            choices=sorted(presets),
            default=default_preset,
            help=f"named settings to start from (default: {default_preset})",
        )
    parser.add_argument(
        "--config", type=Path, help="start from a saved config (YAML or JSON); flags override it"
    )
    add_config_args(parser, cls)


def config_from_args(
    args: argparse.Namespace, cls: type[T], presets: dict[str, T] | None = None
) -> T:
    """The config ``add_stage_args`` describes: the file or preset, then the flags on top."""
    if getattr(args, "config", None):
        base = load_yaml(cls, args.config)
    elif presets:
        base = presets[args.preset]
    else:
        base = cls()
    return replace(base, **overrides_from_args(args, cls))


def overrides_from_args(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The fields the user set on the command line."""
    out = {}
    for field in dataclasses.fields(cls):
        value = getattr(args, field.name, _MISSING)
        if value is not _MISSING:
            out[field.name] = tuple(value) if isinstance(value, list) else value
    return out


def replace(config: T, **changes: Any) -> T:
    """``dataclasses.replace`` that names the unknown field instead of a TypeError."""
    names = {f.name for f in dataclasses.fields(config)}  # type: ignore[arg-type]
    unknown = sorted(set(changes) - names)
    if unknown:
        raise ConfigError(
            f"{type(config).__name__} has no field(s) {unknown}; known: {sorted(names)}"
        )
    return dataclasses.replace(config, **changes)  # type: ignore[type-var]


def to_dict(config: Any) -> dict[str, Any]:
    def plain(value: Any) -> Any:
        if isinstance(value, Path):
            return str(value)
        if isinstance(value, tuple):
            return [plain(v) for v in value]
        return value

    return {f.name: plain(getattr(config, f.name)) for f in dataclasses.fields(config)}


def from_dict(cls: type[T], data: dict[str, Any]) -> T:
    """Build a config from a plain dict (YAML/JSON), coercing lists to tuples and paths."""
    hints = _field_types(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{cls.__name__} has no field(s) {unknown}")
    kwargs = {}
    for name, value in data.items():
        hint = hints[name]
        if isinstance(value, list):
            value = tuple(value)
        elif value is not None and (hint is Path or Path in typing.get_args(hint)):
            value = Path(value)
        kwargs[name] = value
    return cls(**kwargs)


def load_yaml(cls: type[T], path: str | Path) -> T:
    """A config saved by ``save_config`` (or any YAML/JSON mapping of its fields)."""
    if not Path(path).is_file():
        raise MissingInputError(f"config file not found: {path}")
    with open(path) as f:
        data = yaml.safe_load(f) or {}
    data = data.get("config", data)
    return from_dict(cls, data)


def git_sha() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in ("hardood", "torch", "torchvision", "numpy", "faiss-cpu", "open_clip_torch"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def provenance() -> dict[str, Any]:
    return {
        "git_sha": git_sha(),
        "versions": package_versions(),
        "written_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def save_config(config: Any, path: str | Path, **extra: Any) -> Path:
    """Write the resolved config (YAML) with provenance, so a run can be repeated from its folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"kind": type(config).__name__, "config": to_dict(config), "provenance": provenance()}
    doc.update(extra)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(yaml.safe_dump(json.loads(json.dumps(doc)), sort_keys=False))
    tmp.replace(path)
    return path


def config_hash(config: Any) -> str:
    """A short stable hash of a config's values (used to decide whether a step can be reused)."""
    import hashlib

    blob = json.dumps(to_dict(config), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]
