"""Measures the ImageNet training input pipeline in images per second per CPU core.

  python -m experiments.benchmark_input                       # about a minute; writes runs/benchmarks/input_pipeline.*

It generates ImageNet-like JPEGs (about 400x350 pixels, quality 90, textured content: about 70 KB each, the same
order as ImageNet's ~110 KB), then times the training preprocessing of resnet_jax.data.preprocess (random resized crop,
resize, flip, batching, normalisation) twice in the same run: with the fused JPEG decode-and-crop, and with an
unfused decode of the whole image followed by the crop. Each variant runs on one thread (the per-core figure) and
on every core. Throughput is reported per CPU-second the pipeline received, which is the per-core figure even on
shared cores, and per wall-clock second. Reading TFRecords is left out: the cost measured is the CPU work per
image.
"""
from absl import app, flags

from resnet_jax import startup

_NUM_IMAGES = flags.DEFINE_integer("num_images", 64, "Distinct JPEGs generated (cycled through).")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 224, "Training crop size.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 64, "Batch size of the pipeline.")
_SECONDS = flags.DEFINE_float("seconds", 2.5, "Timed seconds per measurement (after a warm-up batch).")
_ROUNDS = flags.DEFINE_integer("rounds", 3, "Interleaved rounds of every measurement; medians are reported.")
_THREADS = flags.DEFINE_list("threads", [], "Thread counts to measure (default: 1 and every core).")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", "runs/benchmarks", "Where input_pipeline.md and .json are written.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  threads = tuple(int(t) for t in _THREADS.value)
  if any(t < 1 for t in threads):
    raise app.UsageError(f"--threads must be positive, got {_THREADS.value}")
  startup.prepare_process()
  from resnet_jax.bench import input as input_bench

  flag_text = " ".join(f"--{f.name}={f.value}" for f in (_NUM_IMAGES, _IMAGE_SIZE, _BATCH_SIZE, _SECONDS, _ROUNDS))
  if threads:
    flag_text += f" --threads={','.join(map(str, threads))}"
  input_bench.run(num_images=_NUM_IMAGES.value, image_size=_IMAGE_SIZE.value, batch_size=_BATCH_SIZE.value,
                  seconds=_SECONDS.value, rounds=_ROUNDS.value, output_dir=_OUTPUT_DIR.value, threads=threads,
                  command=f"python -m experiments.benchmark_input {flag_text}")


if __name__ == "__main__":
  startup.run(main)
