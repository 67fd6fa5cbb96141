"""The augmentation policy strings of `config.data.augment`, read without TensorFlow (config validation runs
without it); `resnet_jax.data.augment` applies them."""
from __future__ import annotations

import dataclasses
import math
import re

LEVEL_MAX = 10.0  # timm's magnitude scale: level / 10 is the fraction of each op's range.


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
