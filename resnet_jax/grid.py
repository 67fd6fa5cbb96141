"""Grids of settings: the `--grid` syntax of sweeps, the combinations it spans and the names of their runs.

Syntax: axes separated by spaces, each `key=value1,value2,...`, where every key is a config field, dotted
(`model.shortcut=A,none` runs `--config.model.shortcut=A` and `=none`) or top-level (`seed=0,1,2`). Values are
written as on the command line and typed by the config field (ints, floats, strings, `true`/`false`). Tuple values
are Python tuples: commas inside parentheses stay inside the value, so `model.head_hidden=(64,),(64,64)` is an axis
of two values, and `()` is the empty tuple. Quote the whole `--grid` argument for the shell.

Each combination's run is named after its values, `name=cifar_resnet20,shortcut=none`, with the last part of each
key (the whole key where two axes would share a name).
"""
from __future__ import annotations

import dataclasses
import itertools
import re
from collections.abc import Sequence

_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_OPEN, _CLOSE = "([{", ")]}"


@dataclasses.dataclass(frozen=True)
class Axis:
  """One grid axis: a config field (a dotted key such as 'model.shortcut', or a top-level one such as 'seed') and
  its values as written on the command line."""
  key: str
  values: tuple[str, ...]


def split_top_level(text: str, separator: str | None) -> list[str]:
  """Splits `text` on `separator` (None: runs of whitespace) outside brackets and quotes.

  Raises:
    ValueError: unbalanced brackets or an unterminated quote.
  """
  parts, current, depth, quote = [], [], 0, None
  for char in text:
    if quote:
      quote = None if char == quote else quote
    elif char in "'\"":
      quote = char
    elif char in _OPEN:
      depth += 1
    elif char in _CLOSE:
      depth -= 1
      if depth < 0:
        raise ValueError(f"unbalanced {char!r} in {text!r}")
    elif depth == 0 and (char.isspace() if separator is None else char == separator):
      parts.append("".join(current))
      current = []
      continue
    current.append(char)
  if quote or depth:
    raise ValueError(f"unterminated {'quote' if quote else 'bracket'} in {text!r}")
  parts.append("".join(current))
  return [p for p in parts if p] if separator is None else parts


def parse_grid(text: str) -> list[Axis]:
  """Parses a grid such as 'model.name=cifar_resnet20,cifar_resnet56 model.shortcut=A,none' into axes (order kept).

  Raises:
    ValueError: empty grid or axis, a missing '=', an empty value, a duplicated key or value, or a malformed key.
  """
  example = "e.g. --grid='model.name=cifar_resnet20,cifar_resnet56 model.shortcut=A,none'"
  tokens = split_top_level(text or "", None)
  if not tokens:
    raise ValueError(f"the grid is empty: give at least one axis key=v1,v2,... ({example})")
  axes, seen = [], set()
  for token in tokens:
    key, sep, rest = token.partition("=")
    if not sep:
      raise ValueError(f"grid axis {token!r} has no '=': write each axis as key=v1,v2,... ({example})")
    if not _KEY.match(key):
      raise ValueError(f"grid axis {token!r}: {key!r} is not a config key (letters, digits, '_' and dots)")
    if key in seen:
      raise ValueError(f"grid key {key!r} appears twice: give all its values in one axis, {key}=v1,v2")
    seen.add(key)
    values = [v.strip() for v in split_top_level(rest, ",")]
    if not rest or not all(values):
      raise ValueError(f"grid axis {token!r} has an empty value: write {key}=v1,v2,... with no empty entries")
    duplicates = sorted({v for v in values if values.count(v) > 1})
    if duplicates:
      raise ValueError(f"grid axis {key!r} repeats the value(s) {duplicates}")
    axes.append(Axis(key, tuple(values)))
  return axes


def combinations(axes: Sequence[Axis]) -> list[dict[str, str]]:
  """Every combination of the axes' values (the first axis varies slowest), as {key: value}."""
  return [dict(zip([a.key for a in axes], values)) for values in itertools.product(*(a.values for a in axes))]


# -- Run naming ------------------------------------------------------------------------------------------------
def axis_labels(axes: Sequence[Axis]) -> dict[str, str]:
  """Short column / run-name label per key: its last part, or the whole key where two axes share a last part."""
  last = [a.key.rsplit(".", 1)[-1] for a in axes]
  return {a.key: (short if last.count(short) == 1 else a.key) for a, short in zip(axes, last)}


def format_value(value: str) -> str:
  """A value as it appears in a run name (a directory name): '(64,64)' -> '64x64', '()' -> 'empty'."""
  text = value.strip().strip("'\"")
  if text and text[0] in _OPEN:
    items = [item.strip().strip("'\"") for item in text[1:-1].split(",") if item.strip()]
    text = "x".join(items) or "empty"
  return re.sub(r"[^A-Za-z0-9._+-]", "_", text)


def run_name(combination: dict[str, str], labels: dict[str, str]) -> str:
  """'name=cifar_resnet20,shortcut=none' for {'model.name': 'cifar_resnet20', 'model.shortcut': 'none'}."""
  return ",".join(f"{labels[key]}={format_value(value)}" for key, value in combination.items())
