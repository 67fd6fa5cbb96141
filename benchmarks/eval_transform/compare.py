"""How close each evaluation transform comes to torchvision's and timm's, on the committed fixture JPEGs.

    python -m benchmarks.eval_transform.compare > benchmarks/eval_transform/result.md

For every reference transform of tests/fixtures/eval_transform (torchvision V1 / V2, timm's resnet50.a3_in1k) and
both of config.data.eval_transform's modes: the share of pixels equal to the reference, within 1/255, and the largest
difference, over the six images (the test's criterion: >= 99 % within 1/255, none above 3/255).
"""
import numpy as np

from tests import test_eval_transform as t


def main():
  print("| reference | eval_transform | pixels equal | within 1/255 | largest difference (/255) |")
  print("|---|---|---:|---:|---:|")
  for case, spec in t.CASES["transforms"].items():
    for mode in ("resize_crop", "crop_resize"):
      diffs = [np.abs(t._ours(case, n, mode).astype(int) - t.EXPECTED[f"{case}/{n}"].astype(int)).ravel()
               for n in t.CASES["images"]]
      d = np.concatenate(diffs)
      label = f"{spec['source']} ({spec['interpolation']}, {spec['image_size']} px, crop {spec['crop_fraction']:.4g})"
      print(f"| {label} | {mode} | {100 * (d == 0).mean():.2f} % | {100 * (d <= 1).mean():.3f} % | {d.max()} |")


if __name__ == "__main__":
  main()
