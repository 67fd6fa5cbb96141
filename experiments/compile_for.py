r"""Compiles a config's train and eval steps for a TPU slice or NVIDIA GPUs that are not here; says if they fit.

  pip install "jax[tpu]==0.10.2"                  # TPU targets (libtpu), beside requirements.txt
  python -m experiments.compile_for --config=configs/tpu.py --target=tpu:v5p-8
  python -m experiments.compile_for --config=configs/default.py --target=tpu:v5e-4,tpu:2xv5p-8 --find_max_batch
  pip install "jax[cuda13]==0.10.2"               # GPU targets (about 5 GB); no GPU needed
  python -m experiments.compile_for --config=configs/gpu.py --target=gpu:h100x8 --config.batch_size=2048

What is compiled is the trainer's own program (`resnet_jax.train.build`, the per-device steps mapped by the config's
strategy over a mesh of the target's devices), for batches of the shapes and dtypes the input pipeline gives; see
resnet_jax/aot.py. Printed per device: argument, output, temporary and code memory; whether it fits, and against
what; FLOPs and bytes per step; the collectives in the program; a roofline lower bound on the step time and the
images/s per chip it implies. `--find_max_batch` finds the largest per-device batch that fits (a few compiles).
`--out=FILE` appends each result as a JSON line, with the versions, and skips what FILE already holds (resumable).

Runs on the CPU (JAX_PLATFORMS=cpu is set unless given): no accelerator is used, even where one is present. A TPU
compile of ResNet-50 takes minutes of CPU; a GPU compile seconds.
"""
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")  # Compile for the target only; touch no local accelerator.
os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")  # No TPU is opened, so compiles may run side by side.

from absl import app, flags  # noqa: E402

from resnet_jax import config as config_lib  # noqa: E402
from resnet_jax import startup  # noqa: E402

_CONFIG = flags.DEFINE_string("config", "configs/default.py", "Config file; set any field with --config.key=value.")
_TARGETS = flags.DEFINE_list("target", ["tpu:v5p-8"], "Targets, e.g. tpu:v4-8, tpu:v5e-4, tpu:v5p-128, "
                             "tpu:2xv5p-8, gpu:h100, gpu:h200x8 (see resnet_jax/aot.py).")
_FIND_MAX = flags.DEFINE_bool("find_max_batch", False, "Also find the largest per-device batch whose train step "
                              "fits (a multiple of --batch_multiple; verified: that batch fits, the next does not).")
_MULTIPLE = flags.DEFINE_integer("batch_multiple", 8, "The granularity of --find_max_batch.")
_EVAL = flags.DEFINE_bool("eval_step", True, "Compile the eval step too.")
_OUT = flags.DEFINE_string("out", None, "Append results here as JSON lines; results already there are skipped.")

_OVERRIDES: list[str] = []


def parse_flags(argv):
  rest, overrides = config_lib.split_overrides(argv)
  _OVERRIDES[:] = overrides
  return flags.FLAGS(rest)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  config = config_lib.resolve(_CONFIG.value, _OVERRIDES)
  if not startup.LIBRARY_LOGS.value:
    startup.quiet_library_logs()
  from resnet_jax import aot  # JAX starts here, on the CPU.

  targets = [aot.parse_target(name) for name in _TARGETS.value]  # Every name checked before any compile.
  info = aot.dataset_shapes(config.data)
  key = aot.program_key(config)
  versions = aot.versions()
  for target in targets:
    devices = aot.target_devices(target)
    common = {"config": _CONFIG.value, "overrides": _OVERRIDES, "program": key, "target": target.name}
    record_key = {**common, "kind": "compile", "batch_size": config.batch_size}
    record = aot.read_result(_OUT.value, record_key)
    if record is None:
      result = aot.compile_config(config, target, devices, info, eval_step=_EVAL.value)
      record = {**record_key, **result, "versions": versions}
      aot.append_result(_OUT.value, record)
    print("\n".join(aot.describe(record)), flush=True)
    if _FIND_MAX.value:
      max_key = {**common, "kind": "max_batch", "batch_multiple": _MULTIPLE.value}
      found = aot.read_result(_OUT.value, max_key)
      if found is None:
        found = {**max_key, **aot.find_max_batch(config, target, devices, info, multiple=_MULTIPLE.value),
                 "usable_bytes": target.chip.usable_bytes, "versions": versions}
        aot.append_result(_OUT.value, found)
      verified = "verified" if found["verified"] else "NOT verified (compile budget spent)"
      print(f"  largest batch that fits: {found['max_per_device_batch']} images per device "
            f"({found['first_not_fitting']} does not; {verified}); memory ~ {aot.gib(found['fixed_bytes'])} + "
            f"{found['bytes_per_image'] / 2**20:.1f} MiB per image", flush=True)


if __name__ == "__main__":
  startup.run(main, flags_parser=parse_flags)
