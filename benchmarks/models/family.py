r"""What each named ImageNet model costs: parameters and multiply-accumulates at 224 px beside the published figures,
and CPU training throughput relative to resnet50, measured side by side by the benchmark harness.

  python -m benchmarks.models.family                 # MACs of every model, throughput of --speed models
  python -m benchmarks.models.family --speed=        # MACs only (a minute)

MACs: `resnet_jax.flops.forward_macs` (XLA's cost analysis of the compiled forward pass, taps over zero padding
counted and BatchNorm left out, as published counts do). Published: torchvision's weights `meta['_ops']`
(documented as GFLOPS, in fact GMACs) and timm's `infer_gmacs` (results/benchmark-infer-amp-nchw-pt240-cu124-rtx4090.csv
in huggingface/pytorch-image-models at commit aa4b5850c1543fa488abf260f18390eda46cf85d).

Throughput: `python -m experiments.benchmark` (the production train step, synthetic batch, median of timed windows)
for resnet50 and each model in turn, float32, --image_size and --batch below; each model's images/s is reported
as a ratio to resnet50's from the same round, and the rounds alternate so drift on a shared machine cancels.
Writes benchmarks/models/family.json and family.md.
"""
import json
import os
import statistics
import subprocess
import sys

from absl import app, flags

flags.DEFINE_list("speed", ["resnet50d", "resnet50s", "seresnet50", "ecaresnet50d", "resnext50_32x4d",
                            "wide_resnet50_2"], "Models whose CPU training throughput is measured against resnet50.")
flags.DEFINE_integer("image_size", 64, "Image side for the throughput runs (224 px training is slow on a laptop).")
flags.DEFINE_integer("batch", 16, "Global batch for the throughput runs.")
flags.DEFINE_integer("rounds", 2, "Alternating rounds (resnet50, then each model).")
flags.DEFINE_string("out_dir", os.path.dirname(os.path.abspath(__file__)), "Where family.json and family.md go.")
FLAGS = flags.FLAGS

# Published GMACs at 224 px: torchvision's meta['_ops'] and timm's infer_gmacs (sources in the docstring).
TORCHVISION_GMACS = {"resnet18": 1.814, "resnet34": 3.664, "resnet50": 4.089, "resnet101": 7.801, "resnet152": 11.514,
                     "resnext50_32x4d": 4.23, "resnext101_32x8d": 16.414, "resnext101_64x4d": 15.46,
                     "wide_resnet50_2": 11.398, "wide_resnet101_2": 22.753}
TIMM_GMACS = {"resnet18": 1.82, "resnet34": 3.67, "resnet50": 4.11, "resnet101": 7.83, "resnet152": 11.56,
              "resnet26d": 2.6, "resnet50c": 4.35, "resnet50d": 4.35, "resnet101d": 8.08, "resnet50s": 5.47,
              "resnet50t": 4.32, "seresnet50": 4.11, "ecaresnet50d": 4.35, "resnext50_32x4d": 4.26,
              "resnext101_32x8d": 16.48, "resnext101_64x4d": 15.52, "seresnext50_32x4d": 4.26,
              "wide_resnet50_2": 11.43, "wide_resnet101_2": 22.8}


def macs_table() -> list[dict]:
  import jax
  import jax.numpy as jnp
  import numpy as np

  from resnet_jax import flops, models, weights

  rows = []
  for name in weights.TORCH_LAYOUT_NAMES:
    model = models.create(name, num_classes=1000)
    shapes = jax.eval_shape(lambda m=model: m.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3))))
    params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes["params"]))
    rows.append({"model": name, "params": params, "gmacs": flops.forward_macs(model) / 1e9,
                 "torchvision_gmacs": TORCHVISION_GMACS.get(name), "timm_gmacs": TIMM_GMACS.get(name)})
    print(f"{name}: {rows[-1]['gmacs']:.3f} GMACs", flush=True)
  return rows


def images_per_second(name: str, out: str) -> float:
  subprocess.run([sys.executable, "-m", "experiments.benchmark", f"--model={name}", f"--batch={FLAGS.batch}",
                  "--dtype=float32", f"--image_size={FLAGS.image_size}", "--warm_compile=false", f"--out={out}"],
                 check=True, stdout=subprocess.DEVNULL)
  with open(out) as f:
    return float(json.load(f)["images_per_sec"])


def main(argv):
  del argv
  result = {"macs": macs_table(), "speed": {}, "settings": {"image_size": FLAGS.image_size, "batch": FLAGS.batch,
                                                             "dtype": "float32", "rounds": FLAGS.rounds}}
  ratios: dict[str, list[float]] = {name: [] for name in FLAGS.speed}
  tmp = os.path.join(FLAGS.out_dir, ".bench.json")
  for _ in range(FLAGS.rounds):
    for name in FLAGS.speed:
      base = images_per_second("resnet50", tmp)
      other = images_per_second(name, tmp)
      ratios[name].append(other / base)
      print(f"{name}: {other:.1f} img/s, resnet50 {base:.1f} img/s, ratio {other / base:.3f}", flush=True)
  if os.path.exists(tmp):
    os.remove(tmp)
  result["speed"] = {name: {"ratios": r, "median": statistics.median(r)} for name, r in ratios.items() if r}
  with open(os.path.join(FLAGS.out_dir, "family.json"), "w") as f:
    json.dump(result, f, indent=1)
    f.write("\n")
  lines = ["| model | parameters | GMACs (ours) | torchvision | timm | CPU training speed vs resnet50 |",
           "|---|---|---|---|---|---|"]
  for row in result["macs"]:
    speed = result["speed"].get(row["model"])
    ratio = f"{speed['median']:.2f}x" if speed else ("1.00x" if row["model"] == "resnet50" and result["speed"]
                                                       else "")
    tv = f"{row['torchvision_gmacs']:.3f}" if row["torchvision_gmacs"] else ""
    timm = f"{row['timm_gmacs']:.2f}" if row["timm_gmacs"] else ""
    lines.append(f"| `{row['model']}` | {row['params']:,} | {row['gmacs']:.3f} | {tv} | {timm} | {ratio} |")
  with open(os.path.join(FLAGS.out_dir, "family.md"), "w") as f:
    f.write("\n".join(lines) + "\n")
  print("\n".join(lines))


if __name__ == "__main__":
  app.run(main)
