"""Configs as dataclasses, loaded from YAML with OmegaConf and overridden with `key=value` strings.

A config file is a path, or the name of a recipe shipped with raedit (`stage2/demo` is
`raedit/recipes/stage2/demo.yaml`), so the recipes work from an installed wheel as from a checkout. An unknown
key anywhere (file or override) is a `RaeditError` naming the key and the closest valid one.

Every value is checked when the config is loaded, before anything is built or written (`check_values`): a config
class lists the values each field allows in `VALID` (field name -> rule, e.g. `at_least(1)`), and may check fields
against each other in `problems()`. An error names the full key, the value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import typing
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from raedit.core.errors import RaeditError, first_line

T = TypeVar("T")
# A rule for one config value: None when the value is allowed, else what is allowed ("must be at least 1").
Rule = Callable[[Any], "str | None"]


def at_least(minimum: float) -> Rule:
    return lambda value: None if _number(value) and value >= minimum else f"must be at least {minimum}"


def above(bound: float) -> Rule:
    return lambda value: None if _number(value) and value > bound else f"must be above {bound}"


def in_range(low: float, high: float, high_open: bool = False, low_open: bool = False) -> Rule:
    """low <= value <= high; `low_open` / `high_open` exclude the ends."""
    def rule(value: Any) -> str | None:
        inside = _number(value) and (value > low if low_open else value >= low) and \
            (value < high if high_open else value <= high)
        return None if inside else f"must be in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    return rule


def one_of(choices: Iterable[str]) -> Rule:
    allowed = tuple(choices)
    return lambda value: None if value in allowed else f"must be one of {', '.join(allowed)}"


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_values(config: Any, prefix: str = "", spell: Callable[[str], str] = str) -> None:
    """A `RaeditError` for the first value of `config` (a dataclass instance, nested ones included) its class's
    `VALID` rules or `problems()` refuse, naming the full key (`prefix` + field, as `spell` writes it, e.g. as a
    command-line option), the value and what is allowed."""
    rules: dict[str, Rule] = getattr(type(config), "VALID", {})
    for field in dataclasses.fields(config):
        value, key = getattr(config, field.name), prefix + field.name
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            check_values(value, f"{key}.", spell)
        elif value is not None and field.name in rules and (problem := rules[field.name](value)):
            raise RaeditError(f"{spell(key)} = {value!r}: {problem}")
    problems = getattr(config, "problems", None)
    for name, problem in problems() if problems else []:
        raise RaeditError(f"{spell(prefix + name)}: {problem}")

RECIPES = Path(__file__).resolve().parents[1] / "recipes"  # shipped as package data


def _valid_keys(cls: type, prefix: str = "") -> list[str]:
    """Every dotted key path of a (nested) dataclass type."""
    keys = []
    for field in dataclasses.fields(cls):
        path = f"{prefix}{field.name}"
        keys.append(path)
        if dataclasses.is_dataclass(field.type) and isinstance(field.type, type):
            keys.extend(_valid_keys(field.type, path + "."))
    return keys


def _given_keys(node: Any, prefix: str = "") -> list[str]:
    keys = []
    if isinstance(node, dict):
        for key, value in node.items():
            path = f"{prefix}{key}"
            keys.append(path)
            keys.extend(_given_keys(value, path + "."))
    return keys


def _resolved_field_types(cls: type) -> type:
    """Replace string annotations (from `from __future__ import annotations`) by the real types."""
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        field.type = hints[field.name]
        if dataclasses.is_dataclass(field.type) and isinstance(field.type, type):
            _resolved_field_types(field.type)
    return cls


def check_keys(cls: type, given: dict, source: str) -> None:
    """Raise a `RaeditError` for the first key of `given` that `cls` does not have; for a key an earlier raedit
    had, what `cls.RETIRED_KEYS` says to do instead."""
    valid = _valid_keys(_resolved_field_types(cls))
    valid_set = set(valid)
    for key in _given_keys(given):
        parent = key.rsplit(".", 1)[0] if "." in key else None
        if key in valid_set:
            continue
        if parent is not None and parent not in valid_set:
            continue  # reported for the parent already
        if key in getattr(cls, "RETIRED_KEYS", {}):
            raise RaeditError(f"config key '{key}' in {source} is gone: {cls.RETIRED_KEYS[key]}")
        close = nearest_key(key, valid)
        hint = f"; did you mean '{close}'?" if close else ""
        raise RaeditError(f"unknown config key '{key}' in {source}{hint}")


def nearest_key(key: str, valid: list[str]) -> str | None:
    """The full dotted key of `valid` a mistyped `key` most likely means: one with the same last part (`train.lr`
    -> `train.optim.lr`), the most alike of those; else the most alike key that holds a value, not a section."""
    sections = {candidate.rsplit(".", 1)[0] for candidate in valid if "." in candidate}
    leaves = [candidate for candidate in valid if candidate not in sections]
    last = key.rsplit(".", 1)[-1]
    same_last = [candidate for candidate in leaves if candidate.rsplit(".", 1)[-1] == last]
    if same_last:
        return max(same_last, key=lambda candidate: difflib.SequenceMatcher(None, key, candidate).ratio())
    close = difflib.get_close_matches(key, leaves, n=1, cutoff=0.5) or difflib.get_close_matches(key, valid, n=1,
                                                                                                 cutoff=0.5)
    return close[0] if close else None


def parse_overrides(overrides: list[str]) -> dict:
    """`["a.b=1", "c=x"]` -> nested dict; a malformed item is a `RaeditError`."""
    for item in overrides:
        if "=" not in item or item.startswith("="):
            raise RaeditError(f"override '{item}' is not of the form key=value")
    return OmegaConf.to_container(OmegaConf.from_dotlist(list(overrides)))  # type: ignore[return-value]


def find_config(path_or_recipe: str | Path) -> Path:
    """The YAML file `path_or_recipe`, or else the shipped recipe of that name (with or without `.yaml`)."""
    path = Path(path_or_recipe)
    if path.is_file():
        return path
    for candidate in (RECIPES / path, RECIPES / f"{path}.yaml"):
        if candidate.is_file():
            return candidate
    raise RaeditError(f"config file not found: {path} (not a file, nor a recipe; `raedit recipes` lists them)")


def recipe_names() -> list[str]:
    """The shipped recipes, as names `find_config` takes (e.g. "stage2/demo")."""
    return sorted(str(path.relative_to(RECIPES).with_suffix("")) for path in RECIPES.rglob("*.yaml"))


def load_config(cls: type[T], path: str | Path | None = None, overrides: list[str] | None = None) -> T:
    """Build a `cls` instance from its defaults, then the YAML file or recipe `path`, then `overrides`."""
    merged: DictConfig = OmegaConf.structured(_resolved_field_types(cls))
    sources: list[str] = []  # where the values come from, for an error
    try:
        if path is not None:
            file = find_config(path)
            sources.append(str(file))
            merged = OmegaConf.merge(merged, _read_yaml(cls, file))  # type: ignore[assignment]
        if overrides:
            sources.append("the command line")
            given = parse_overrides(overrides)
            check_keys(cls, given, "the command line")
            merged = OmegaConf.merge(merged, given)  # type: ignore[assignment]
        config = OmegaConf.to_object(merged)
    except OmegaConfBaseException as error:  # a value of the wrong type
        raise RaeditError(f"invalid config value in {' or '.join(sources) or 'the defaults'}: "
                          f"{first_line(error)}") from None
    check_values(config)
    return config  # type: ignore[return-value]


def _read_yaml(cls: type, path: Path) -> dict:
    try:
        from_file = OmegaConf.to_container(OmegaConf.load(path)) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise RaeditError(f"config file {path} is not readable YAML: {first_line(error)}") from None
    if not isinstance(from_file, dict):
        raise RaeditError(f"config file {path} does not hold a mapping of keys")
    check_keys(cls, from_file, str(path))
    return from_file


def to_yaml(config: Any) -> str:
    """The resolved config as YAML text (for run directories and checkpoints)."""
    return OmegaConf.to_yaml(OmegaConf.structured(config))
