r"""Where the time of the CPU train step goes, from XLA's own profile, beside the PyTorch peer's (torch.profiler).

  python -m experiments.profile --model=cifar_resnet20 --batch=128 --image_size=32 [--peer]

Prints and writes benchmarks/profiles/<model>_b<batch>_<size>px.md and .json: milliseconds per step of convolution
forward, gradient with respect to the input and to the weights (per stage width), reductions (BatchNorm, pooling,
loss), elementwise work, copies and transposes, and the time between ops; then the convolutions again, each timed
alone (XLA:CPU's trace records their launch, not their run time, which lands in "between ops"). The trainer's CPU
XLA flags apply (as in experiments.benchmark); --extra_xla_flags adds others.
"""
import os

from absl import app, flags

from resnet_jax import startup

_MODEL = flags.DEFINE_string("model", "cifar_resnet20", "A name from resnet_jax.models.names().")
_BATCH = flags.DEFINE_integer("batch", 128, "Global batch.")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 32, "Input side in pixels.")
_STEPS = flags.DEFINE_integer("steps", 5, "Profiled steps (after a few untimed ones).")
_PEER = flags.DEFINE_bool("peer", True, "Also profile the PyTorch CIFAR peer (needs torch).")
_CONVS = flags.DEFINE_bool("time_convolutions", True, "Also time each of the step's convolutions alone (the trace "
                            "records their launch, not their run time).")
_EXTRA = flags.DEFINE_string("extra_xla_flags", "", "XLA flags appended to the platform's.")
_PLATFORM = flags.DEFINE_bool("platform_xla_flags", True, "Apply resnet_jax/xla_flags.py's flags.")
_OUT = flags.DEFINE_string("out", "runs/profiles", "Directory for the .md and .json files.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if _STEPS.value < 1 or _BATCH.value < 1:
    raise app.UsageError("--steps and --batch must be positive")
  from resnet_jax.bench import run as bench

  bench.configure_xla(bench.xla_flags_for("cpu", _PLATFORM.value, _EXTRA.value))
  startup.prepare_process(platform_xla_flags=False)  # The flags above are this profile's.
  from resnet_jax import files
  from resnet_jax.bench import profile, workload

  spec = workload.resolve_workload(_MODEL.value, platform_name="cpu", device_count=1, batch=_BATCH.value,
                                   dtype="float32", image_size=_IMAGE_SIZE.value)
  ours = profile.profile(spec, steps=_STEPS.value)
  if _CONVS.value:
    ours["conv_alone"] = profile.conv_timings(spec)
  peer = None
  if _PEER.value and spec.family == "cifar":
    peer = profile.torch_profile(spec.model, batch=spec.batch, image_size=spec.image_size, steps=_STEPS.value)
  stem = os.path.join(_OUT.value, f"{spec.model}_b{spec.batch}_{spec.image_size}px")
  files.write_json(stem + ".json", {"ours": ours, "peer": peer})
  text = profile.markdown(ours, peer)
  files.write_text(stem + ".md", f"# {spec.model}, batch {spec.batch}, {spec.image_size} px, float32, CPU\n\n"
                   f"`python -m experiments.profile --model={spec.model} --batch={spec.batch} "
                   f"--image_size={spec.image_size}`\n\n{text}")
  print(text)


if __name__ == "__main__":
  startup.run(main)
