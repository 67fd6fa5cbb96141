"""What every script does before its work: the shared flags, quiet library logs, XLA flags, TensorFlow off the
accelerators, and one-line errors for bad input.

    from resnet_jax import startup

    def main(argv):
      config = ...                                     # read flags and inputs; raise ValueError on bad ones
      startup.prepare_process(config.platform_xla_flags)  # before anything touches a JAX device
      ...

    if __name__ == "__main__":
      startup.run(main)

Importing this module defines the flags `--library_logs` and `--verbose` once, for whichever scripts a process
loads.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
import os
import sys
from collections.abc import Callable

from absl import app, flags

from resnet_jax import xla_flags

LIBRARY_LOGS = flags.DEFINE_bool("library_logs", False,
                                 "Also show the INFO lines of Orbax, TFDS and JAX (warnings always show).")
VERBOSE = flags.DEFINE_bool("verbose", False, "Show the traceback of an error caused by bad input, not only its "
                            "message.")

# Libraries whose INFO lines (every checkpoint step, every dataset lookup) bury a script's own output.
CHATTY_LIBRARIES = ("orbax", "tensorflow_datasets", "jax")

# Errors that mean "the input is wrong" (flags, configs, paths, files): reported as one line saying what to do.
INPUT_ERRORS = (ValueError, FileNotFoundError, NotADirectoryError, FileExistsError, ImportError, app.UsageError)


def prepare_process(platform_xla_flags: bool = True) -> None:
  """Sets up the process for JAX work: library logs quiet (unless --library_logs), the platform's measured XLA flags
  (`resnet_jax.xla_flags`, unless `platform_xla_flags` is False), TensorFlow kept off the accelerators.

  Call before anything touches a JAX device: XLA reads its flags once, when the first backend starts.
  """
  if not LIBRARY_LOGS.value:
    quiet_library_logs()
  xla_flags.apply(platform_xla_flags)
  hide_accelerators_from_tensorflow()


def keep_unknown_flags(argv: list[str]) -> list[str]:
  """An absl `flags_parser` for scripts that pass the flags they do not define on to the trainers they start."""
  return flags.FLAGS(argv, known_only=True)


def trainer_flags(argv: list[str]) -> list[str]:
  """The flags `keep_unknown_flags` left in `argv`, for every trainer; anything else is a usage error."""
  stray = [a for a in argv[1:] if not a.startswith("--")]
  if stray:
    raise app.UsageError(f"unexpected arguments {stray}: pass trainer flags as --name=value")
  return argv[1:]


def run(main: Callable[[list[str]], None], flags_parser: Callable[[list[str]], list[str]] | None = None) -> None:
  """`absl.app.run(main)`, with bad input reported as one line (`<script>: <message>`) and exit status 2.

  `--verbose` shows the traceback too. Other errors (bugs, a non-finite loss) keep their traceback.
  """
  def guarded(argv):
    try:
      main(argv)
    except INPUT_ERRORS as error:
      if VERBOSE.value:
        raise
      script = os.path.basename(sys.argv[0]).removesuffix(".py") or "error"
      if script == "__main__":
        script = "error"
      message = str(error).strip() or type(error).__name__
      print(f"{script}: {message}", file=sys.stderr)
      sys.exit(2)

  kwargs = {"flags_parser": flags_parser} if flags_parser is not None else {}
  app.run(guarded, **kwargs)


class _QuietLibraries(logging.Filter):
  """Drops INFO and DEBUG records emitted from files of the `CHATTY_LIBRARIES` packages."""

  def __init__(self):
    super().__init__()
    self.prefixes = tuple(os.path.join(location, "") for name in CHATTY_LIBRARIES
                          for location in _package_locations(name))

  def filter(self, record: logging.LogRecord) -> bool:
    return record.levelno >= logging.WARNING or not record.pathname.startswith(self.prefixes)


def _package_locations(name: str) -> list[str]:
  try:
    spec = importlib.util.find_spec(name)
  except (ImportError, ValueError):  # Not installed (or hidden, as the tests hide TensorFlow).
    return []
  return list(spec.submodule_search_locations or []) if spec else []


def quiet_library_logs() -> None:
  """Keeps the INFO lines of Orbax, TFDS and JAX off absl's console handler (warnings and errors still show)."""
  from absl import logging as absl_logging
  absl_logging.get_absl_handler().addFilter(_QuietLibraries())


def hide_accelerators_from_tensorflow() -> None:
  """Keeps TensorFlow (the input pipeline only) off the GPUs, so that it takes none of JAX's memory.

  With `tensorflow-cpu`, as pinned in requirements.txt, TensorFlow cannot see accelerators and is not even imported
  here (importing it costs seconds, and synthetic-data runs never need it). A GPU build of TensorFlow, if one is
  installed instead, is told to use no GPU.
  """
  try:
    importlib.metadata.distribution("tensorflow")
  except importlib.metadata.PackageNotFoundError:
    return
  import tensorflow as tf  # A GPU-capable build: hide its GPUs before it allocates memory on them.
  try:
    tf.config.set_visible_devices([], "GPU")
  except RuntimeError:  # TensorFlow already initialised its devices; whoever started it chose them.
    pass
