"""The files of a run and how they are written and read: names, atomic writes, JSON and metrics.jsonl readers.

A run's workdir holds `config.json` (the resolved config), `metrics.jsonl` (one JSON record per logged training
window and per evaluation), `done.json` (the final evaluation, written when the run completes) and `checkpoints/`.
Every file here is written atomically: readers see the old file or the complete new one, never half of it, even
when the writer is killed. Paths may be local or URLs that TensorFlow's file systems handle (gs://...); only URLs
import TensorFlow.
"""
from __future__ import annotations

import json
import math
import os
import uuid
from collections.abc import Iterable
from typing import Any

# The checkout this package is in (configs/, experiments/ and benchmarks/ live beside it).
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
DONE_FILE = "done.json"  # Written by the engine, with the final metrics, when a run completes.
CHECKPOINT_DIR = "checkpoints"


def _gfile():
  import tensorflow as tf  # Only for URLs such as gs://.
  return tf.io.gfile


def is_url(path: str) -> bool:
  return "://" in path


def makedirs(path: str) -> None:
  if is_url(path):
    _gfile().makedirs(path)
  else:
    os.makedirs(path, exist_ok=True)


def exists(path: str) -> bool:
  return _gfile().exists(path) if is_url(path) else os.path.exists(path)


def open_file(path: str, mode: str = "r"):
  """`open` for local paths, TensorFlow's GFile for URLs."""
  return _gfile().GFile(path, mode) if is_url(path) else open(path, mode)


def write_text(path: str, text: str) -> None:
  """Writes `text` to `path` atomically: through a temporary file beside it, renamed over `path` when complete.

  A crash or an exception while writing leaves any previous `path` untouched and no temporary file. Atomic on POSIX
  file systems (os.replace); on object stores the final rename is a copy.
  """
  _write_atomically(path, text, "")


def write_bytes(path: str, data: bytes) -> None:
  """`write_text` for bytes (a weights file, an image)."""
  _write_atomically(path, data, "b")


def _write_atomically(path: str, data, binary: str) -> None:
  directory = os.path.dirname(path) or "."
  # A unique name in the same directory: os.replace is atomic only within one file system.
  tmp = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
  if is_url(path):
    makedirs(directory)
    with open_file(tmp, "w" + binary) as f:
      f.write(data)
    _gfile().rename(tmp, path, overwrite=True)
    return
  os.makedirs(directory, exist_ok=True)
  try:
    with open(tmp, "x" + binary) as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def _json_default(value: Any) -> Any:
  # Anything JSON cannot hold (a dtype, a callable) is recorded by its string form rather than failing the writer.
  return str(value)


def _finite(value: Any) -> Any:
  """Non-finite floats become None (JSON has no NaN), recursively."""
  if isinstance(value, float) and not math.isfinite(value):
    return None
  if isinstance(value, dict):
    return {k: _finite(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_finite(v) for v in value]
  return value


def write_json(path: str, value: Any, *, indent: int = 2, sort_keys: bool = True) -> None:
  """Writes `value` as JSON, atomically; NaN and infinities are written as null."""
  text = json.dumps(_finite(value), indent=indent, sort_keys=sort_keys, default=_json_default)
  write_text(path, text + "\n")


def read_json(path: str) -> Any:
  """The JSON in `path`, or None if there is no such file."""
  if not exists(path):
    return None
  with open_file(path) as f:
    return json.load(f)


def read_records(path: str) -> list[dict[str, Any]]:
  """The records of a JSON-lines file (metrics.jsonl) in file order; [] if there is no such file.

  A line that does not parse (the last line of a run killed while writing it) is skipped, as is anything that is not
  a record with a step.
  """
  if not exists(path):
    return []
  records = []
  with open_file(path) as f:
    for line in f.read().splitlines():
      try:
        record = json.loads(line)
      except json.JSONDecodeError:
        continue
      if isinstance(record, dict) and isinstance(record.get("step"), int):
        records.append(record)
  return records


def latest_records(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
  """Records with each (split, step) kept once: where a resumed run wrote a step again, the later record wins and
  takes the later position."""
  kept: dict[tuple[Any, int], dict[str, Any]] = {}
  for record in records:
    key = (record.get("split"), record["step"])
    kept.pop(key, None)
    kept[key] = record
  return list(kept.values())


def split_records(records: Iterable[dict[str, Any]], split: str) -> list[dict[str, Any]]:
  """Records of one split ('train' or 'eval'), by step."""
  return sorted((r for r in records if r.get("split") == split), key=lambda r: r["step"])
