"""One trainer per workdir: a lock file that a second trainer refuses, and that a killed trainer never leaves in the
way of its own resume.

The lock is `<workdir>/lock.json`, created exclusively (O_EXCL) by the main process of a run and holding its host,
process id, the process's start time, the host's boot id and a heartbeat that a background thread refreshes every
`heartbeat_s` seconds. A second trainer finding it refuses to start and names the holder. A lock counts as stale,
and is taken over, when its holder is gone:

- on the same host (same host name and boot id): the process no longer exists, or the pid now belongs to another
  process (its start time differs);
- from another host (a shared file system): its heartbeat is older than `stale_after_s`.

Taking over is an atomic replace followed by a read-back, so that of two trainers taking over at once only one
wins. On URL workdirs (gs://) there is no exclusive create: the check is the same, but two trainers starting within
the same moment could both pass it.
"""
from __future__ import annotations

import datetime
import json
import logging
import os
import socket
import threading
import time
import uuid
from typing import Any

from resnet_jax import files

LOCK_FILE = "lock.json"


class WorkdirInUseError(ValueError):
  """Another live trainer holds the workdir."""


def _boot_id() -> str:
  try:
    with open("/proc/sys/kernel/random/boot_id") as f:
      return f.read().strip()
  except OSError:
    return ""


def _process_start(pid: int) -> str | None:
  """The start time of process `pid` (clock ticks since boot, from /proc), or None where it cannot be read."""
  try:
    with open(f"/proc/{pid}/stat") as f:
      return f.read().rsplit(")", 1)[1].split()[19]
  except (OSError, IndexError):
    return None


def _alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


class WorkdirLock:
  """The lock of one run's workdir (see the module docstring). Use as a context manager, or acquire/release."""

  def __init__(self, workdir: str, *, heartbeat_s: float = 10.0, stale_after_s: float = 120.0):
    self.path = os.path.join(workdir, LOCK_FILE)
    self.heartbeat_s = heartbeat_s
    self.stale_after_s = stale_after_s
    self._token = uuid.uuid4().hex
    self._stop = threading.Event()
    self._thread: threading.Thread | None = None
    self._info: dict[str, Any] = {}

  def _record(self) -> dict[str, Any]:
    pid = os.getpid()
    return {"host": socket.gethostname(), "pid": pid, "process_start": _process_start(pid), "boot_id": _boot_id(),
            "since": datetime.datetime.now().astimezone().isoformat(timespec="seconds"), "token": self._token,
            "heartbeat": time.time()}

  def _read(self) -> dict[str, Any] | None:
    try:
      with files.open_file(self.path) as f:
        return json.loads(f.read())
    except (OSError, json.JSONDecodeError, ValueError):
      return None

  def stale(self, holder: dict[str, Any] | None) -> bool:
    """Whether the trainer that wrote `holder` is gone (see the module docstring)."""
    if not holder or "pid" not in holder:
      return True  # Unreadable: a holder killed while writing it (lock files are written atomically otherwise).
    same_host = holder.get("host") == socket.gethostname() and holder.get("boot_id") == _boot_id()
    if same_host:
      if not _alive(holder["pid"]):
        return True
      start = _process_start(holder["pid"])
      return start is not None and holder.get("process_start") is not None and start != holder["process_start"]
    return time.time() - float(holder.get("heartbeat", 0)) > self.stale_after_s

  def acquire(self) -> None:
    """Takes the lock, or raises WorkdirInUseError naming the live trainer that holds it."""
    files.makedirs(os.path.dirname(self.path) or ".")
    self._info = self._record()
    text = json.dumps(self._info)
    if not files.is_url(self.path):
      try:
        fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
      except FileExistsError:
        pass
      else:
        with os.fdopen(fd, "w") as f:
          f.write(text)
        self._start_heartbeat()
        return
    holder = self._read()
    if holder is not None and not self.stale(holder):
      raise WorkdirInUseError(_in_use_message(os.path.dirname(self.path), holder, self.stale_after_s))
    if holder is not None:
      logging.warning("Taking over the lock of %s left by process %s on %s (since %s): that trainer is gone.",
                      os.path.dirname(self.path), holder.get("pid"), holder.get("host"), holder.get("since"))
    files.write_text(self.path, text)
    time.sleep(0.05)  # Another trainer taking over at the same moment: the later replace wins; read back.
    winner = self._read()
    if not winner or winner.get("token") != self._token:
      raise WorkdirInUseError(_in_use_message(os.path.dirname(self.path), winner or {}, self.stale_after_s))
    self._start_heartbeat()

  def _start_heartbeat(self) -> None:
    def beat():
      while not self._stop.wait(self.heartbeat_s):
        current = self._read()
        if current and current.get("token") == self._token:
          files.write_text(self.path, json.dumps({**self._info, "heartbeat": time.time()}))

    self._thread = threading.Thread(target=beat, name="workdir-lock-heartbeat", daemon=True)
    self._thread.start()

  def release(self) -> None:
    """Stops the heartbeat and removes the lock if it is still this trainer's."""
    self._stop.set()
    if self._thread is not None:
      self._thread.join()
      self._thread = None
    current = self._read()
    if current and current.get("token") == self._token:
      if files.is_url(self.path):
        files._gfile().remove(self.path)
      else:
        os.remove(self.path)

  def __enter__(self) -> WorkdirLock:
    self.acquire()
    return self

  def __exit__(self, *exc_info) -> None:
    self.release()


def _in_use_message(workdir: str, holder: dict[str, Any], stale_after_s: float) -> str:
  age = time.time() - float(holder.get("heartbeat", time.time()))
  return (f"{workdir} is in use by another trainer: process {holder.get('pid')} on host {holder.get('host')}, "
          f"running since {holder.get('since')} (heartbeat {age:.0f} s ago). Wait for it to finish, stop it (kill "
          f"-TERM {holder.get('pid')} on {holder.get('host')}: it checkpoints and exits), or give another --workdir. "
          f"A lock left by a trainer that was killed is taken over by the next run once that process is gone (or, "
          f"from another host, after {stale_after_s:.0f} s without a heartbeat).")
