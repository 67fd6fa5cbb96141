"""The "Before renting" table of docs/accelerators.md, from benchmarks/accelerators/results.jsonl (run.sh).

  python -m benchmarks.accelerators.table > benchmarks/accelerators/table.md
"""
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
GiB = 1024**3
# Published training throughput per chip, for the roofline column's context.
PUBLISHED = {
    "NVIDIA H100 SXM 80GB": "7,161 (MLPerf v4.0, MXNet + DALI)",
    "NVIDIA H200 SXM 141GB": "7,951 (MLPerf v4.0, MXNet + DALI)",
}


def load(path):
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def _max_batches(records):
  """{(program, target): max-batch record}."""
  return {(r["program"], r["target"]): r for r in records if r["kind"] == "max_batch"}


def _config_name(record):
  overrides = " ".join(record["overrides"])
  return record["config"].removeprefix("configs/") + (f" {overrides}" if overrides else "")


def rows(records):
  found = _max_batches(records)
  out = []
  for r in records:
    if r["kind"] != "compile":
      continue
    train = r["train"]
    fits = "yes" if train.get("fits") and r.get("eval", {}).get("fits", True) else "**no**"
    if "refused" in train:
      memory, flops, roof, coll = "refused by the compiler", "", "", ""
    else:
      memory = f"{train['memory']['total'] / GiB:.1f} of {r['usable_bytes'] / GiB:.0f}"
      flops = f"{train['flops'] / 1e12:.2f}"
      rl = train["roofline"]
      roof = f"{rl['images_per_s_per_chip']:,.0f} ({rl['bound'][:3]})"
      coll = str(sum(train["collectives"].values()))
    best = found.get((r["program"], r["target"]))
    if best:
      largest = f"{best['max_per_device_batch']:,}" + ("" if best["verified"] else " (unverified)")
    else:
      largest = ""
    out.append([_config_name(r), r["target"], f"{r['per_device_batch']:,}", fits, memory, largest, flops, coll,
                roof, PUBLISHED.get(r["chip"], "")])
  return out


HEADER = ["config", "target", "batch per chip", "fits", "train step GiB per chip (of usable)",
          "largest batch per chip", "TFLOP per chip-step", "collectives", "roofline images/s per chip (bound)",
          "published images/s per chip"]


CONFIG_ORDER = ("gpu.py", "tpu.py", "default.py", "imagenet_lars.py")
TARGET_ORDER = ("gpu:h100", "gpu:h200", "gpu:h100x8", "gpu:h200x8", "tpu:v4-8", "tpu:v5e-4", "tpu:v5e-8", "tpu:v5p-8",
                "tpu:v6e-4", "tpu:v5p-128", "tpu:2xv5p-8")


def _order(row):
  """GPU rows, then TPU rows; in each, the config (its own chip's config first), then the target."""
  config, target = row[0].split(":")[0].split(" ")[0], row[1]
  rank = lambda seq, x: seq.index(x) if x in seq else len(seq)  # noqa: E731
  return (target.startswith("tpu"), rank(CONFIG_ORDER, config), rank(TARGET_ORDER, target))


def markdown(table):
  lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
  lines += ["| " + " | ".join(row) + " |" for row in table]
  return "\n".join(lines)


def versions(records):
  seen = {json.dumps(r.get("versions", {}), sort_keys=True) for r in records}
  return [json.loads(v) for v in sorted(seen)]


def main(argv):
  path = argv[1] if len(argv) > 1 else os.path.join(HERE, "results.jsonl")
  records = load(path)
  print(markdown(sorted(rows(records), key=_order)))
  print()
  for v in versions(records):
    print("Versions: " + ", ".join(f"{k} {x}" for k, x in sorted(v.items())))


if __name__ == "__main__":
  main(sys.argv)
