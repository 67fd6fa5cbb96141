"""The input pipeline's speed: the ImageNet training preprocessing of resnet_jax.data.preprocess on generated JPEGs,
fused and unfused JPEG decode side by side, per CPU-second (the per-core figure, even on shared cores) and per
wall-clock second. `experiments/benchmark_input.py` is its command line.
"""
import os
import platform
import time

import numpy as np
import tensorflow as tf

from resnet_jax import files
from resnet_jax.data import augment as augment_lib
from resnet_jax.data import preprocess


def imagenet_like_jpegs(count: int, seed: int = 0) -> list[bytes]:
  """JPEGs of about 400x350 px at quality 90: smooth colour regions plus texture, like photographs."""
  rng = np.random.default_rng(seed)
  images = []
  for _ in range(count):
    height, width = int(rng.integers(300, 400)), int(rng.integers(350, 450))
    # Low-frequency colour layout, upsampled, plus mid-frequency texture and sensor-like noise.
    layout = tf.image.resize(rng.uniform(0, 255, (1, 6, 8, 3)), [height, width], method="bicubic")[0].numpy()
    texture = tf.image.resize(rng.normal(0, 30, (1, height // 2, width // 2, 3)), [height, width])[0].numpy()
    image = np.clip(layout + texture + rng.normal(0, 10, (height, width, 3)), 0, 255).astype(np.uint8)
    images.append(tf.io.encode_jpeg(image, quality=90).numpy())
  return images


# Training policies measured beside the plain pipeline (config.data.augment; 'erasing' is random erasing on every
# image, the worst case of config.data.random_erasing).
POLICIES = ("", "rand-m9-mstd0.5-inc1", "rand-m7-mstd0.5-inc1", "trivial", "original", "erasing")


def _pipeline(jpegs, *, fused: bool, threads: int, image_size: int, batch_size: int,
              policy: str = "") -> tf.data.Dataset:
  images = tf.data.Dataset.from_tensor_slices(tf.constant(jpegs)).repeat().enumerate()
  augment = preprocess.train_fn("imagenet", image_size=image_size, policy=policy if policy != "erasing" else "")

  def example(i, jpeg):
    seed = preprocess.example_seed(0, i)
    if not policy:  # The plain pipeline, with the fused decode or without.
      return preprocess.imagenet_train(jpeg, seed, image_size=image_size, fused=fused), tf.zeros([4], tf.int32)
    box = augment_lib.erasing_box(seed, image_size, image_size, 1.0) if policy == "erasing" else tf.zeros([4],
                                                                                                          tf.int32)
    return augment(jpeg, seed), box
  images = images.map(example, num_parallel_calls=threads, deterministic=True)

  def normalize(batch, boxes):
    batch = preprocess.normalize(batch, preprocess.IMAGENET_MEAN, preprocess.IMAGENET_STD)
    if policy == "erasing":
      batch = augment_lib.erase(batch, boxes, tf.random.experimental.stateless_split(tf.constant([0, 1], tf.int64),
                                                                                      batch_size))
    return batch
  batches = images.batch(batch_size, drop_remainder=True).map(normalize)
  options = tf.data.Options()
  options.threading.private_threadpool_size = threads
  options.threading.max_intra_op_parallelism = 1
  options.autotune.enabled = False  # Exactly `threads` threads, so that the per-core figure means what it says.
  return batches.prefetch(2).with_options(options)


def measure(jpegs, *, fused: bool, threads: int, image_size: int, batch_size: int, seconds: float,
            policy: str = ""):
  """(images per wall-clock second, images per CPU-second of this process) through the training preprocessing.

  Images per CPU-second is the per-core throughput even when other programs share the cores: it counts only the
  processor time this pipeline received.
  """
  iterator = iter(_pipeline(jpegs, fused=fused, threads=threads, image_size=image_size, batch_size=batch_size,
                            policy=policy))
  next(iterator)  # Warm-up: tracing and thread start.
  images, start, cpu_start = 0, time.perf_counter(), time.process_time()
  while time.perf_counter() - start < seconds:
    next(iterator)
    images += batch_size
  return images / (time.perf_counter() - start), images / (time.process_time() - cpu_start)


def _markdown(result) -> str:
  rows = "\n".join(
      f'| {r["decode"]} | {r["threads"]} | {r["images_per_cpu_s"]:.0f} | {r["images_per_s"]:.0f} |'
      for r in result["runs"])
  none = result["policies"][0]["images_per_cpu_s"]
  policy_rows = "\n".join(
      f'| {p["policy"] or "none"} | {p["images_per_cpu_s"]:.0f} | {p["images_per_cpu_s"] / none:.2f} | '
      f'{1000 / p["images_per_cpu_s"]:.1f} |' for p in result["policies"])
  speedups = ", ".join(f"{threads} thread(s): {value:.2f}x" for threads, value in result["fused_speedup"].items())
  wall_speedups = ", ".join(f"{threads} thread(s): {value:.2f}x"
                            for threads, value in result["fused_speedup_wall"].items())
  return f"""# Input pipeline benchmark

ImageNet training preprocessing (random resized crop to {result['image_size']} px, flip, batch {result['batch_size']},
normalisation) on {result['num_images']} generated JPEGs of about 400x350 px at quality 90 (mean
{result['mean_jpeg_kb']:.0f} KB; ImageNet's average is about 110 KB), TFRecord reading excluded.

Command: `{result['command']}`
Machine: {result['machine']}, {result['cpu_count']} CPU cores visible; TensorFlow {result['tensorflow']}; load
average {result['load_average']} at the start. Medians of {result['rounds']} interleaved rounds.

| decode | threads | images per CPU-second (per core) | images per wall-clock second |
|---|---|---|---|
{rows}

Images per CPU-second divide the images by the processor time the pipeline received, so they give the per-core
throughput even on shared cores; the wall-clock figures depend on how busy the machine was.
Fused decode-and-crop speed-up over decoding the whole JPEG, per CPU-second: {speedups}; per wall-clock second:
{wall_speedups}.

## Augmentation policies

The same pipeline (fused decode, one thread) with a training policy after the crop and flip
(`config.data.augment`; 'erasing' is `config.data.random_erasing=1.0`, every image erased), in the same interleaved
rounds. Cores per 1,000 images/s is what a GPU host must set aside for the input at that rate.

| policy | images per CPU-second (per core) | relative to none | cores per 1,000 images/s |
|---|---|---|---|
{policy_rows}
"""


def run(*, num_images: int, image_size: int, batch_size: int, seconds: float, rounds: int, output_dir: str,
        threads: tuple[int, ...] = (), command: str = "", policies: tuple[str, ...] = POLICIES) -> dict:
  """Measures every (decode, threads) pair and every policy (fused, one thread) in interleaved rounds; writes
  input_pipeline.json and .md into `output_dir` and returns the result. `threads` defaults to 1 and every core."""
  jpegs = imagenet_like_jpegs(num_images)
  cores = os.cpu_count() or 1
  load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
  thread_counts = sorted(set(threads) or {1, cores})
  samples = {(fused, count): [] for count in thread_counts for fused in (True, False)}
  policy_samples = {policy: [] for policy in policies if policy}
  # Interleaved rounds, so that a change in the machine's load hits every variant alike.
  for _ in range(rounds):
    for (fused, count), values in samples.items():
      values.append(measure(jpegs, fused=fused, threads=count, image_size=image_size, batch_size=batch_size,
                            seconds=seconds))
    for policy, values in policy_samples.items():
      values.append(measure(jpegs, fused=True, threads=1, image_size=image_size, batch_size=batch_size,
                            seconds=seconds, policy=policy))
  runs = []
  for (fused, count), values in samples.items():
    wall, cpu = np.median(np.array(values), axis=0)
    runs.append({"decode": "fused" if fused else "unfused", "threads": count, "images_per_s": float(wall),
                 "images_per_cpu_s": float(cpu)})
    print(f'{runs[-1]["decode"]:8s} threads={count}: {cpu:7.1f} images per CPU-second, {wall:7.1f} images/s')
  by_key = {(r["decode"], r["threads"]): r for r in runs}
  policy_runs = [{"policy": "", "images_per_cpu_s": by_key[("fused", 1)]["images_per_cpu_s"]}] if 1 in thread_counts \
      else []
  for policy, values in policy_samples.items():
    wall, cpu = np.median(np.array(values), axis=0)
    policy_runs.append({"policy": policy, "images_per_cpu_s": float(cpu), "images_per_s": float(wall)})
    print(f"policy {policy:22s}: {cpu:7.1f} images per CPU-second")
  result = {
      "command": command,
      "machine": f"{platform.machine()} {platform.processor() or platform.system()}",
      "cpu_count": cores, "load_average": round(load, 2), "tensorflow": tf.__version__,
      "num_images": len(jpegs), "mean_jpeg_kb": float(np.mean([len(j) for j in jpegs]) / 1024),
      "image_size": image_size, "batch_size": batch_size, "rounds": rounds, "runs": runs, "policies": policy_runs,
      "fused_speedup": {t: by_key[("fused", t)]["images_per_cpu_s"] / by_key[("unfused", t)]["images_per_cpu_s"]
                        for t in thread_counts},
      "fused_speedup_wall": {t: by_key[("fused", t)]["images_per_s"] / by_key[("unfused", t)]["images_per_s"]
                             for t in thread_counts},
  }
  files.write_json(os.path.join(output_dir, "input_pipeline.json"), result)
  files.write_text(os.path.join(output_dir, "input_pipeline.md"), _markdown(result))
  print(f"Wrote {output_dir}/input_pipeline.md and .json")
  return result
