"""Short fixed training runs, digested: the before/after check that a change leaves default training bitwise the same.

    python -m benchmarks.determinism.fixed_runs --out=FILE.json [--compare=OTHER.json]

Trains a few fixed 8-step runs of a half-width CIFAR ResNet-20 on `shapes/small` (2 simulated devices, shard_map),
one per input family and one per strategy, and writes for each the SHA-256 of its final parameters, BatchNorm
statistics and optimizer state, its per-step training losses and its final evaluation. Run it before a change and
after it on the same machine; `--compare` prints which runs differ. (Bitwise equality holds on one kind of machine
and one set of versions only, see docs/training.md.)
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

COMMON = ["--config.data.builder_config=small", "--config.model.width=0.5", "--config.batch_size=32",
          "--config.eval_batch_size=100", "--config.num_epochs=None", "--config.num_steps=8",
          "--config.log_every_steps=1", "--config.eval_every_epochs=None", "--config.checkpoint_every_steps=8",
          "--config.schedule.warmup_epochs=None", "--config.schedule.warmup_steps=2", "--config.compilation_cache_dir="]
RUNS = {
    "cifar_shard_map": [],
    "cifar_pmap": ["--config.parallelism=pmap"],
    "imagenet_family": ["--config.data.preprocess=imagenet", "--config.label_smoothing=0.1"],
    "adamw_ema": ["--config.optimizer.name=adamw", "--config.schedule.base_lr=0.001",
                  "--config.optimizer.ema_decay=0.9"],
}

_DIGEST = """
import hashlib, json, sys
import numpy as np
import orbax.checkpoint as ocp
from resnet_jax import checkpoint
workdir = sys.argv[1]
directory = workdir + "/checkpoints"
step = max(checkpoint.complete_steps(directory))
tree = ocp.StandardCheckpointer().restore(f"{directory}/{step}/state")
import jax
digest = hashlib.sha256()
for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
  digest.update(jax.tree_util.keystr(path).encode())
  digest.update(np.ascontiguousarray(np.asarray(leaf)).tobytes())
print(digest.hexdigest())
"""


def run_one(name: str, flags: list[str], data_dir: str) -> dict:
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu"}
  with tempfile.TemporaryDirectory() as workdir:
    subprocess.run([sys.executable, "-m", "experiments.train", "--config=configs/shapes.py", f"--workdir={workdir}",
                    f"--config.data.data_dir={data_dir}", *COMMON, *flags], cwd=ROOT, env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = subprocess.run([sys.executable, "-c", _DIGEST, workdir], cwd=ROOT, env=env, check=True,
                           capture_output=True, text=True).stdout.strip().splitlines()[-1]
    records = [json.loads(line) for line in open(f"{workdir}/metrics.jsonl")]
  losses = {str(r["step"]): r["loss"] for r in records if r["split"] == "train"}
  final = [r for r in records if r["split"] != "train"][-1]
  return {"state_sha256": state, "train_loss": losses,
          "eval": {k: final[k] for k in ("loss", "top1") if k in final}}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", required=True)
  parser.add_argument("--compare")
  parser.add_argument("--data_dir", default=os.path.expanduser("~/tensorflow_datasets"))
  args = parser.parse_args()
  results = {}
  for name, flags in RUNS.items():
    results[name] = run_one(name, flags, args.data_dir)
    print(name, results[name]["state_sha256"][:16], results[name]["eval"], flush=True)
  with open(args.out, "w") as f:
    json.dump(results, f, indent=1)
  if args.compare:
    other = json.load(open(args.compare))
    same = {name: other.get(name) == results[name] for name in results}
    for name, equal in same.items():
      print(f"{name}: {'bitwise the same' if equal else 'DIFFERENT'}")
    sys.exit(0 if all(same.values()) else 1)


if __name__ == "__main__":
  main()
