r"""Training throughput of the production train step, with peer implementations measured side by side.

  python -m experiments.benchmark --model=resnet50 --batch=256 --dtype=bfloat16 --peers=torch_eager,torch_compile
  python -m experiments.benchmark --model=resnet50 --batch=8 --dtype=float32 --peers=keras
  python -m experiments.benchmark --model=cifar_resnet56 --batch=128 --dtype=float32 --peers=torch_cifar

What is timed is `resnet_jax.train.train_step` itself, mapped over every device by
`resnet_jax.parallel.strategy('shard_map', ...)` and compiled ahead of time, exactly as the trainer runs it (state
donated to the step, BatchNorm statistics synchronised across devices as in configs/default.py). Its input is one
synthetic batch generated once on the devices and sharded along the mesh, so no host-to-device copy or input
pipeline is measured. The timed loop only dispatches steps: the host waits for the devices once per window.
The optimizer is SGD with momentum 0.9 (no weight decay), the same as every peer's.

Reported (printed, and written as JSON to --out):
  images/s       the median over --windows timed windows, after the first step and --warmup more;
  compile        cold (tracing + lowering + XLA compilation in this process, with an empty persistent cache) and
                 warm: the same compilation in a fresh process pointed at the now-filled cache (a relaunch);
  MFU            XLA's FLOP count of the compiled step over the device's peak FLOP/s (resnet_jax.reporting's table;
                 on CPUs an estimate from /proc/cpuinfo: cores x clock x FMA width);
  memory         peak bytes in use on the device (where the backend reports it) and XLA's buffer sizes;
  peers          each in its own process (benchmarks/peers/), same batch, image size, dtype and timing protocol,
                 with our ratio to it. A peer that cannot run here is recorded as skipped, with the reason.

Our step is measured in a child process too (--role=measure), and the warm-cache relaunch is another
(--role=compile): each measurement has the devices to itself, and no process keeps accelerator memory reserved
while another one runs.

Runs without TensorFlow or TFDS (the GPU images have only JAX, Flax, Optax, Orbax and PyTorch; bring ml_collections,
which the workload's config needs).
"""
import sys

from absl import app, flags

from resnet_jax import startup

ROLES = ("run", "measure", "compile")


def define_flags() -> None:
  """Registers the command line. Called only when run as a script, so that tests can import this module next to
  other scripts that define flags of the same names (absl refuses duplicates)."""
  flags.DEFINE_string("model", "resnet50", "A name from resnet_jax.models.names().")
  flags.DEFINE_integer("batch", None, "Global batch. Default: per device kind (resnet_jax.bench.workload's "
                       "DEFAULT_BATCH).")
  flags.DEFINE_enum("dtype", "bfloat16", ["float32", "bfloat16"], "Compute dtype; parameters stay float32.")
  flags.DEFINE_integer("image_size", None, "Input side in pixels. Default: 224 (ImageNet nets) or 32 (CIFAR nets).")
  flags.DEFINE_integer("num_classes", None, "Classifier width. Default: 1000 (ImageNet nets) or 10 (CIFAR nets).")
  flags.DEFINE_string("variant", None, "Model variant override ('v1' matches the Keras peer's layout).")
  flags.DEFINE_integer("steps", 20, "Timed steps, split into --windows windows.")
  flags.DEFINE_integer("windows", 5, "Timed windows; images/s is their median.")
  flags.DEFINE_integer("warmup", 3, "Untimed steps after the first one.")
  flags.DEFINE_bool("sync_batch_stats", True, "Synchronise BatchNorm statistics across devices (the default recipe).")
  flags.DEFINE_list("peers", [], "Peers to run side by side: any of keras, torch_eager, torch_compile, torch_cifar.")
  flags.DEFINE_integer("rounds", 1, "Repeat (ours, then each peer) this many times; report medians and the median "
                       "of the per-round ratios (pairs measured minutes apart share a shared machine's load).")
  flags.DEFINE_integer("peer_timeout", 3600, "Seconds before a peer process is abandoned.")
  flags.DEFINE_string("out", None, "JSON result path. Default: runs/benchmarks/<device>_<model>_b<batch>_<dtype>.json.")
  flags.DEFINE_string("compilation_cache_dir", None,
                      "Persistent compilation cache. Default: a fresh temporary directory (the first compile is cold).")
  flags.DEFINE_bool("warm_compile", True, "Also time the compilation in a relaunched process with the warm cache.")
  # Not named --xla_*: JAX hashes command-line arguments starting with "--xla" into its compilation-cache keys, so
  # such a flag would make the relaunch miss the cache it is meant to measure.
  flags.DEFINE_string("extra_xla_flags", "", "XLA flags appended to $XLA_FLAGS before the backend starts.")
  flags.DEFINE_bool("platform_xla_flags", True, "Apply resnet_jax/xla_flags.py's flags for the platform found "
                    "(measured effects in benchmarks/RESULTS.md).")
  flags.DEFINE_enum("role", "run", ROLES, "'run': the whole benchmark. The parts it starts in their own processes: "
                    "'measure' (our step) and 'compile' (the warm-cache relaunch).")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  from resnet_jax.bench import run as bench

  FLAGS = flags.FLAGS  # pylint: disable=invalid-name
  options = bench.Options(
      model=FLAGS.model, batch=FLAGS.batch, dtype=FLAGS.dtype, image_size=FLAGS.image_size,
      num_classes=FLAGS.num_classes, variant=FLAGS.variant, sync_batch_stats=FLAGS.sync_batch_stats,
      steps=FLAGS.steps, windows=FLAGS.windows, warmup=FLAGS.warmup, peers=tuple(FLAGS.peers), rounds=FLAGS.rounds,
      peer_timeout=FLAGS.peer_timeout, out=FLAGS.out, compilation_cache_dir=FLAGS.compilation_cache_dir,
      warm_compile=FLAGS.warm_compile, extra_xla_flags=FLAGS.extra_xla_flags,
      platform_xla_flags=FLAGS.platform_xla_flags)
  if FLAGS.role == "run":
    bench.run(options, sys.argv[1:])
  else:
    bench.child(FLAGS.role, options)


if __name__ == "__main__":
  define_flags()
  startup.run(main)
