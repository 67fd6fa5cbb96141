"""Draws every `shapes` builder config in full at each NumPy SIMD level this CPU offers and compares the bytes.

    python -m benchmarks.determinism.shapes_simd [--configs=default,small,...] [--out=FILE.json]

One child process per level (NPY_DISABLE_CPU_FEATURES steps down from the best dispatch target to the baseline),
each drawing every example of both splits with `shapes.generate` and hashing the images and labels. Prints a table
of SHA-256 digests (first 16 hex digits) with one column per level, and whether they all agree; `--out` writes the
same as JSON. The default suite's `tests/test_data_shapes.py` checks the same on 200 examples per split.
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

_CHILD = """
import hashlib, json, sys, time
from resnet_jax.data import shapes
names = sys.argv[1].split(",")
out = {}
for config in shapes.BUILDER_CONFIGS:
  if config.name not in names:
    continue
  for split, count in (("train", config.num_train), ("test", config.num_test)):
    start = time.perf_counter()
    digest = hashlib.sha256()
    for first in range(0, count, shapes._CHUNK):
      images, labels = shapes.generate(config, split, first // shapes._CHUNK, min(shapes._CHUNK, count - first))
      digest.update(images.tobytes())
      digest.update(labels.tobytes())
    out[f"{config.name}/{split}"] = {"sha256": digest.hexdigest(), "examples": count,
                                     "seconds": round(time.perf_counter() - start, 2)}
print(json.dumps(out))
"""


def simd_levels():
  """NPY_DISABLE_CPU_FEATURES values: none, then stepping down to the baseline."""
  from numpy._core._multiarray_umath import __cpu_dispatch__, __cpu_features__
  found = [target for target in __cpu_dispatch__ if __cpu_features__.get(target)]
  return [[]] + [found[i:] for i in reversed(range(len(found)))]


def main():
  from resnet_jax.data import shapes
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--configs", default=",".join(c.name for c in shapes.BUILDER_CONFIGS))
  parser.add_argument("--out", default=None, help="also write the result as JSON to this file")
  args = parser.parse_args()
  import numpy as np
  from numpy._core._multiarray_umath import __cpu_baseline__
  levels = simd_levels()
  results = []
  for disabled in levels:
    env = dict(os.environ, NPY_DISABLE_CPU_FEATURES=" ".join(disabled), PYTHONPATH=ROOT)
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _CHILD, args.configs], env=env, cwd=ROOT, capture_output=True,
                          text=True, check=True)
    results.append({"disabled": disabled, "seconds": round(time.perf_counter() - start, 1),
                    "digests": json.loads(proc.stdout.strip().splitlines()[-1])})
    print(f"level {' '.join(disabled) or '(all found)'} drawn in {results[-1]['seconds']} s", flush=True)
  names = list(results[0]["digests"])
  agree = all(r["digests"][n]["sha256"] == results[0]["digests"][n]["sha256"] for r in results for n in names)
  header = ["config/split", "examples"] + ["-" + "-".join(r["disabled"]) if r["disabled"] else "all found"
                                          for r in results]
  print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
  for n in names:
    cells = [n, str(results[0]["digests"][n]["examples"])] + [r["digests"][n]["sha256"][:16] for r in results]
    print("| " + " | ".join(cells) + " |")
  print(f"All levels give the same bytes: {agree}")
  record = {"numpy": np.__version__, "python": platform.python_version(), "machine": platform.machine(),
            "cpu": _cpu_name(), "baseline": list(__cpu_baseline__), "levels": results, "all_equal": agree}
  if args.out:
    with open(args.out, "w") as f:
      json.dump(record, f, indent=1)
  sys.exit(0 if agree else 1)


def _cpu_name():
  try:
    with open("/proc/cpuinfo") as f:
      return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
  except (OSError, StopIteration):
    return platform.processor()


if __name__ == "__main__":
  main()
