"""The image-processing choices a config names, read without TensorFlow (config validation runs without it): the
augmentation policy strings of `config.data.augment` (`resnet_jax.data.augment` applies them) and the evaluation
transforms (`resnet_jax.data.preprocess`)."""
from __future__ import annotations

import dataclasses
import math
import re

LEVEL_MAX = 10.0  # timm's magnitude scale: level / 10 is the fraction of each op's range.
# Evaluation of the 'imagenet' family: 'crop_resize' decodes only the central window, then resizes it (fast);
# 'resize_crop' decodes the whole image as PIL does, resizes its short side with antialiasing, then centre-crops
# (torchvision's and timm's evaluation, which published accuracies were measured with).
EVAL_TRANSFORMS = ("crop_resize", "resize_crop")
INTERPOLATIONS = ("bilinear", "bicubic")


def check_eval_transform(transform: str, interpolation: str) -> None:
  """Raises ValueError naming the field unless the evaluation transform and interpolation exist and go together."""
  if transform not in EVAL_TRANSFORMS:
    raise ValueError(f"Unknown evaluation transform {transform!r} (config.data.eval_transform); choose one of "
                     f"{list(EVAL_TRANSFORMS)}.")
  if interpolation not in INTERPOLATIONS:
    raise ValueError(f"Unknown interpolation {interpolation!r} (config.data.eval_interpolation); choose one of "
                     f"{list(INTERPOLATIONS)}.")
  if interpolation != "bilinear" and transform != "resize_crop":
    raise ValueError(f"config.data.eval_interpolation={interpolation!r} needs config.data.eval_transform="
                     "'resize_crop' (the fast 'crop_resize' resizes bilinearly)")


@dataclasses.dataclass(frozen=True)
class Policy:
  """A parsed `config.data.augment`."""
  kind: str  # 'rand', 'trivial' or 'original'
  num_ops: int = 2
  magnitude: float = LEVEL_MAX
  magnitude_std: float = 0.0
  magnitude_max: float = LEVEL_MAX
  increasing: bool = False
  prob: float = 0.5


def parse(text: str | None) -> Policy | None:
  """The policy of a timm-style string ('rand-m9-mstd0.5-inc1', 'trivial', 'original-mstd0.5'); None for ''.

  Raises:
    ValueError: a string that does not parse, or a value out of range, naming config.data.augment.
  """
  if not text:
    return None
  head, *sections = text.split("-")
  kind = {"rand": "rand", "trivial": "trivial", "trivialaugment": "trivial", "original": "original",
          "autoaugment": "original"}.get(head)
  if kind is None:
    raise ValueError(f"config.data.augment={text!r}: unknown policy {head!r}; write 'rand-m9-mstd0.5' "
                     "(RandAugment: n ops, m magnitude 0-10, mstd, mmax, inc 0/1, p), 'trivial' or 'original' "
                     "(AutoAugment's ImageNet policy, optionally -mstd0.5)")
  allowed = {"rand": ("n", "m", "mstd", "mmax", "inc", "p"), "trivial": (), "original": ("mstd",)}[kind]
  fields = {}
  for section in sections:
    match = re.fullmatch(r"([a-z]+)(\d+(?:\.\d*)?)", section)
    if not match or match.group(1) not in allowed:
      raise ValueError(f"config.data.augment={text!r}: cannot read {section!r}; {head} takes "
                       f"{', '.join(k + '<number>' for k in allowed) or 'no options'}")
    fields[match.group(1)] = float(match.group(2))
  policy = Policy(kind, num_ops=int(fields.get("n", 2)), magnitude=fields.get("m", LEVEL_MAX),
                  magnitude_std=math.inf if fields.get("mstd", 0.0) > 100 else fields.get("mstd", 0.0),
                  magnitude_max=fields.get("mmax", LEVEL_MAX), increasing=bool(fields.get("inc", 0)),
                  prob=fields.get("p", 0.5))
  if policy.num_ops < 1 or not 0 <= policy.prob <= 1 or not 0 <= policy.magnitude <= policy.magnitude_max:
    raise ValueError(f"config.data.augment={text!r}: needs n >= 1, 0 <= p <= 1 and 0 <= m <= mmax "
                     f"({policy.magnitude_max:g})")
  return policy
