"""Peer: `keras.applications.ResNet50(weights=None)` trained with the TensorFlow backend and XLA (jit_compile).

The step is the one `model.fit` runs: `model.compile(..., jit_compile=True)` then `train_on_batch` on one
synthetic batch that already lives in TensorFlow, SGD with momentum 0.9, softmax cross-entropy on logits. Keras's
ResNet50 is the v1 layout (stride on the first 1x1 of a downsampling bottleneck, biases on every conv): about 6 %
fewer multiply-adds than the v1.5 layout, so `experiments.benchmark --variant=v1` compares equal work.

  python -m benchmarks.peers.keras_resnet50 --batch=8 --image_size=224 --out=keras.json
"""
from __future__ import annotations

import os

from benchmarks.peers import harness

PEER = "keras"


def main():
  p = harness.parser(__doc__.splitlines()[0])
  p.add_argument("--num_classes", type=int, default=1000)
  args = p.parse_args()

  missing = harness.missing_modules(["tensorflow", "keras"])
  if missing:
    harness.skip(args.out, PEER, f"missing Python module(s) {missing}: pip install tensorflow-cpu keras")
  if args.device != "cpu":
    harness.skip(args.out, PEER, f"this peer measures TensorFlow on the CPU only (asked for {args.device})")
  os.environ["KERAS_BACKEND"] = "tensorflow"  # Must precede the first `import keras`.
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  os.environ["CUDA_VISIBLE_DEVICES"] = ""  # Keep TensorFlow on the CPU even where it sees a GPU.
  import keras
  import tensorflow as tf

  if keras.backend.backend() != "tensorflow":
    harness.skip(args.out, PEER, f"Keras picked the {keras.backend.backend()!r} backend, not TensorFlow")
  if args.dtype == "bfloat16":
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
  keras.utils.set_random_seed(args.seed)
  model = keras.applications.ResNet50(weights=None, input_shape=(args.image_size, args.image_size, 3),
                                      classes=args.num_classes, classifier_activation=None)
  model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.1, momentum=0.9),
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), jit_compile=True)
  images = tf.random.normal((args.batch, args.image_size, args.image_size, 3))
  labels = tf.random.uniform((args.batch,), maxval=args.num_classes, dtype=tf.int32)

  def step():
    # train_on_batch returns the loss as a NumPy value, so each step already ends synchronised.
    model.train_on_batch(images, labels)

  timing = harness.time_steps(step, lambda: None, warmup=args.warmup, windows=args.windows, window=args.window)
  result = harness.summarize(timing, args.batch)
  result.update(
      peer=PEER, status="ok", framework="keras (tensorflow backend, jit_compile)",
      workload={"model": "keras.applications.ResNet50 (v1 layout)", "batch": args.batch,
                "image_size": args.image_size, "dtype": args.dtype, "optimizer": "SGD momentum 0.9"},
      num_params=int(model.count_params()), device=f"cpu ({os.cpu_count()} cores)",
      versions={"keras": keras.__version__, "tensorflow": tf.__version__}, environment=harness.environment())
  harness.write(args.out, result)
  print(f"{PEER}: {result['images_per_sec']:.2f} images/s")


if __name__ == "__main__":
  main()
