"""How published ImageNet weights of each named model were evaluated: the weights' evaluation settings, by tag.

A .safetensors or state_dict file carries arrays only; the image size, centre-crop fraction, interpolation and
normalisation its published accuracy was measured with live here, keyed `<model>.<tag>` as the publishers name them:
timm's pretrained tags (`resnet50.a1_in1k`, `resnet50d.ra2_in1k`, ...: timm 1.0's `default_cfgs`, read with
`timm.models.get_pretrained_cfg`) and torchvision's weights enums (`resnet50.IMAGENET1K_V2`: the weights'
`transforms()` and `meta`). `top1` is the published ImageNet-1k validation top-1 at `input_size` and `crop_pct`
(timm's results/results-imagenet.csv; torchvision's `meta['_metrics']`), where published.

Evaluation as published resizes the short side to `input_size / crop_pct` with `interpolation` (antialiased), then
centre-crops `input_size` (timm's and torchvision's eval transforms). timm's `test` size is the larger resolution
its results also report (FixRes effect); torchvision's `crop_pct` is crop / resize (224 / 232 for V2).
`tests/test_pretrained.py` checks every entry against the installed timm and torchvision, where they are installed.
"""
from __future__ import annotations

import dataclasses
import math

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclasses.dataclass(frozen=True)
class EvalSettings:
  """The evaluation transform a set of published weights was measured with."""
  input_size: int  # the centre crop, in pixels
  crop_pct: float  # crop / short side after resizing
  interpolation: str  # 'bilinear' or 'bicubic'
  mean: tuple[float, float, float] = IMAGENET_MEAN  # on [0, 1] pixels
  std: tuple[float, float, float] = IMAGENET_STD
  test: tuple[int, float] | None = None  # timm's test-time (input_size, crop_pct), where it gives one
  top1: float | None = None  # published top-1 (%) at input_size / crop_pct
  source: str = "timm"

  @property
  def resize_size(self) -> int:
    """The short side before the centre crop (timm: floor(input_size / crop_pct))."""
    return math.floor(self.input_size / self.crop_pct + 1e-9)  # 224 / (224 / 232) is 231.99999... in floats


_HALF = dict(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))  # timm's ra4 weights normalise to [-1, 1]


def _timm(size, crop_pct, interpolation, **kwargs) -> EvalSettings:
  return EvalSettings(size, crop_pct, interpolation, **kwargs)


def _torchvision(crop, resize, *, top1) -> EvalSettings:
  return EvalSettings(crop, crop / resize, "bilinear", top1=top1, source="torchvision")


PUBLISHED: dict[str, EvalSettings] = {
    "resnet18.a1_in1k": _timm(224, 0.95, "bicubic", test=(288, 1.0), top1=71.504),
    "resnet18.a2_in1k": _timm(224, 0.95, "bicubic", test=(288, 1.0), top1=70.634),
    "resnet18.a3_in1k": _timm(160, 0.95, "bicubic", test=(224, 0.95), top1=65.67),
    "resnet18.tv_in1k": _timm(224, 0.875, "bilinear", top1=69.752),
    "resnet18.fb_ssl_yfcc100m_ft_in1k": _timm(224, 0.875, "bilinear", top1=72.636),
    "resnet18.fb_swsl_ig1b_ft_in1k": _timm(224, 0.875, "bilinear", top1=73.286),
    "resnet18.gluon_in1k": _timm(224, 0.875, "bicubic", top1=70.844),
    "resnet34.a1_in1k": _timm(224, 0.95, "bicubic", test=(288, 1.0), top1=76.42),
    "resnet34.a2_in1k": _timm(224, 0.95, "bicubic", test=(288, 1.0), top1=75.52),
    "resnet34.a3_in1k": _timm(160, 0.95, "bicubic", test=(224, 0.95), top1=70.58),
    "resnet34.bt_in1k": _timm(224, 0.875, "bicubic", test=(288, 0.95), top1=75.176),
    "resnet34.ra4_e3600_r224_in1k": _timm(224, 0.9, "bicubic", test=(288, 1.0), **_HALF, top1=77.492),
    "resnet34.tv_in1k": _timm(224, 0.875, "bilinear", top1=73.298),
    "resnet34.gluon_in1k": _timm(224, 0.875, "bicubic", top1=74.574),
    "resnet50.a1_in1k": _timm(224, 0.95, "bicubic", test=(288, 1.0), top1=80.382),
    "resnet50.a1h_in1k": _timm(176, 0.9, "bicubic", test=(224, 1.0), top1=79.264),
    "resnet50.a2_in1k": _timm(224, 0.95, "bicubic", test=(288, 1.0), top1=79.828),
    "resnet50.a3_in1k": _timm(160, 0.95, "bicubic", test=(224, 0.95), top1=75.994),
    "resnet50.b1k_in1k": _timm(224, 0.95, "bicubic", test=(288, 1.0), top1=79.564),
    "resnet50.b2k_in1k": _timm(224, 0.95, "bicubic", test=(288, 1.0), top1=79.388),
    "resnet50.c1_in1k": _timm(224, 0.95, "bicubic", test=(288, 1.0), top1=79.766),
    "resnet50.c2_in1k": _timm(224, 0.95, "bicubic", test=(288, 1.0), top1=79.868),
    "resnet50.d_in1k": _timm(224, 0.95, "bicubic", test=(288, 1.0), top1=79.904),
    "resnet50.ram_in1k": _timm(224, 0.875, "bicubic", test=(288, 0.95), top1=79.034),
    "resnet50.am_in1k": _timm(224, 0.875, "bicubic", top1=79.004),
    "resnet50.ra_in1k": _timm(224, 0.875, "bicubic", test=(288, 0.95), top1=78.82),
    "resnet50.bt_in1k": _timm(224, 0.875, "bicubic", test=(288, 0.95), top1=78.444),
    "resnet50.tv_in1k": _timm(224, 0.875, "bilinear", top1=76.156),
    "resnet50.tv2_in1k": _timm(176, 0.875, "bilinear", test=(224, 0.965), top1=79.434),
    "resnet50.fb_ssl_yfcc100m_ft_in1k": _timm(224, 0.875, "bilinear", top1=79.252),
    "resnet50.fb_swsl_ig1b_ft_in1k": _timm(224, 0.875, "bilinear", top1=81.146),
    "resnet50.gluon_in1k": _timm(224, 0.875, "bicubic", top1=77.58),
    "resnet101.a1h_in1k": _timm(224, 0.95, "bicubic", test=(288, 1.0), top1=81.95),
    "resnet101.a1_in1k": _timm(224, 0.95, "bicubic", test=(288, 1.0), top1=81.494),
    "resnet101.a2_in1k": _timm(224, 0.95, "bicubic", test=(288, 1.0), top1=81.344),
    "resnet101.a3_in1k": _timm(160, 0.95, "bicubic", test=(224, 0.95), top1=77.928),
    "resnet101.tv_in1k": _timm(224, 0.875, "bilinear", top1=77.404),
    "resnet101.tv2_in1k": _timm(176, 0.875, "bilinear", test=(224, 0.965), top1=79.908),
    "resnet101.gluon_in1k": _timm(224, 0.875, "bicubic", top1=79.306),
    "resnet152.a1h_in1k": _timm(224, 0.95, "bicubic", test=(288, 1.0), top1=82.818),
    "resnet152.a1_in1k": _timm(224, 0.95, "bicubic", test=(288, 1.0), top1=81.998),
    "resnet152.a2_in1k": _timm(224, 0.95, "bicubic", test=(288, 1.0), top1=81.764),
    "resnet152.a3_in1k": _timm(160, 0.95, "bicubic", test=(224, 0.95), top1=78.896),
    "resnet152.tv_in1k": _timm(224, 0.875, "bilinear", top1=78.33),
    "resnet152.tv2_in1k": _timm(176, 0.875, "bilinear", test=(224, 0.965), top1=80.222),
    "resnet152.gluon_in1k": _timm(224, 0.875, "bicubic", top1=79.712),
    "resnet26d.bt_in1k": _timm(224, 0.875, "bicubic", test=(288, 0.95), top1=76.698),
    "resnet50c.gluon_in1k": _timm(224, 0.875, "bicubic", top1=78.016),
    "resnet50d.ra2_in1k": _timm(224, 0.875, "bicubic", test=(288, 0.95), top1=80.546),
    "resnet50d.ra4_e3600_r224_in1k": _timm(224, 0.95, "bicubic", test=(288, 1.0), **_HALF, top1=80.956),
    "resnet50d.a1_in1k": _timm(224, 0.95, "bicubic", test=(288, 1.0), top1=80.73),
    "resnet50d.a2_in1k": _timm(224, 0.95, "bicubic", test=(288, 1.0), top1=80.268),
    "resnet50d.a3_in1k": _timm(160, 0.95, "bicubic", test=(224, 0.95), top1=77.222),
    "resnet50d.gluon_in1k": _timm(224, 0.875, "bicubic", top1=79.08),
    "resnet101d.ra2_in1k": _timm(256, 0.95, "bicubic", test=(320, 1.0), top1=82.254),
    "resnet101d.gluon_in1k": _timm(224, 0.875, "bicubic", top1=80.466),
    "resnet50s.gluon_in1k": _timm(224, 0.875, "bicubic", top1=78.71),
    "seresnet50.a1_in1k": _timm(224, 0.95, "bicubic", test=(288, 1.0), top1=80.012),
    "seresnet50.a2_in1k": _timm(224, 0.95, "bicubic", test=(288, 1.0), top1=80.102),
    "seresnet50.a3_in1k": _timm(160, 0.95, "bicubic", test=(224, 0.95), top1=75.104),
    "seresnet50.ra2_in1k": _timm(224, 0.875, "bicubic", test=(288, 0.95), top1=80.26),
    "ecaresnet50d.miil_in1k": _timm(224, 0.875, "bicubic", test=(288, 0.95), top1=80.634),
    "resnext50_32x4d.a1h_in1k": _timm(224, 0.95, "bicubic", test=(288, 1.0), top1=81.14),
    "resnext50_32x4d.a1_in1k": _timm(224, 0.95, "bicubic", test=(288, 1.0), top1=80.526),
    "resnext50_32x4d.a2_in1k": _timm(224, 0.95, "bicubic", test=(288, 1.0), top1=80.444),
    "resnext50_32x4d.a3_in1k": _timm(160, 0.95, "bicubic", test=(224, 0.95), top1=77.732),
    "resnext50_32x4d.ra_in1k": _timm(224, 0.875, "bicubic", test=(288, 0.95), top1=79.8),
    "resnext50_32x4d.tv_in1k": _timm(224, 0.875, "bilinear", top1=77.632),
    "resnext50_32x4d.tv2_in1k": _timm(176, 0.875, "bilinear", test=(224, 0.965), top1=79.384),
    "resnext50_32x4d.fb_ssl_yfcc100m_ft_in1k": _timm(224, 0.875, "bilinear", top1=80.316),
    "resnext50_32x4d.fb_swsl_ig1b_ft_in1k": _timm(224, 0.875, "bilinear", top1=82.162),
    "resnext50_32x4d.gluon_in1k": _timm(224, 0.875, "bicubic", top1=79.354),
    "resnext101_32x8d.tv_in1k": _timm(224, 0.875, "bilinear", top1=79.308),
    "resnext101_32x8d.tv2_in1k": _timm(176, 0.875, "bilinear", test=(224, 0.965), top1=81.99),
    "resnext101_32x8d.fb_wsl_ig1b_ft_in1k": _timm(224, 0.875, "bilinear", top1=82.72),
    "resnext101_32x8d.fb_ssl_yfcc100m_ft_in1k": _timm(224, 0.875, "bilinear", top1=81.62),
    "resnext101_32x8d.fb_swsl_ig1b_ft_in1k": _timm(224, 0.875, "bilinear", top1=84.276),
    "resnext101_64x4d.c1_in1k": _timm(224, 0.95, "bicubic", test=(288, 1.0), top1=82.446),
    "resnext101_64x4d.tv_in1k": _timm(224, 0.875, "bilinear", top1=82.978),
    "resnext101_64x4d.gluon_in1k": _timm(224, 0.875, "bicubic", top1=80.64),
    "seresnext50_32x4d.racm_in1k": _timm(224, 0.875, "bicubic", test=(288, 0.95), top1=81.268),
    "seresnext50_32x4d.gluon_in1k": _timm(224, 0.875, "bicubic", top1=79.916),
    "wide_resnet50_2.racm_in1k": _timm(224, 0.875, "bicubic", test=(288, 0.95), top1=81.466),
    "wide_resnet50_2.tv_in1k": _timm(224, 0.875, "bilinear", top1=78.486),
    "wide_resnet50_2.tv2_in1k": _timm(176, 0.875, "bilinear", test=(224, 0.965), top1=80.442),
    "wide_resnet101_2.tv_in1k": _timm(224, 0.875, "bilinear", top1=78.862),
    "wide_resnet101_2.tv2_in1k": _timm(176, 0.875, "bilinear", test=(224, 0.965), top1=80.494),
    "resnet18.IMAGENET1K_V1": _torchvision(224, 256, top1=69.758),
    "resnet34.IMAGENET1K_V1": _torchvision(224, 256, top1=73.314),
    "resnet50.IMAGENET1K_V1": _torchvision(224, 256, top1=76.13),
    "resnet50.IMAGENET1K_V2": _torchvision(224, 232, top1=80.858),
    "resnet101.IMAGENET1K_V1": _torchvision(224, 256, top1=77.374),
    "resnet101.IMAGENET1K_V2": _torchvision(224, 232, top1=81.886),
    "resnet152.IMAGENET1K_V1": _torchvision(224, 256, top1=78.312),
    "resnet152.IMAGENET1K_V2": _torchvision(224, 232, top1=82.284),
    "resnext50_32x4d.IMAGENET1K_V1": _torchvision(224, 256, top1=77.618),
    "resnext50_32x4d.IMAGENET1K_V2": _torchvision(224, 232, top1=81.198),
    "resnext101_32x8d.IMAGENET1K_V1": _torchvision(224, 256, top1=79.312),
    "resnext101_32x8d.IMAGENET1K_V2": _torchvision(224, 232, top1=82.834),
    "resnext101_64x4d.IMAGENET1K_V1": _torchvision(224, 232, top1=83.246),
    "wide_resnet50_2.IMAGENET1K_V1": _torchvision(224, 256, top1=78.468),
    "wide_resnet50_2.IMAGENET1K_V2": _torchvision(224, 232, top1=81.602),
    "wide_resnet101_2.IMAGENET1K_V1": _torchvision(224, 256, top1=78.848),
    "wide_resnet101_2.IMAGENET1K_V2": _torchvision(224, 232, top1=82.51),
}

# timm's default tag per model (what `timm.create_model(name, pretrained=True)` loads).
DEFAULT_TAGS = {
    "resnet18": "a1_in1k", "resnet34": "a1_in1k", "resnet50": "a1_in1k", "resnet101": "a1h_in1k",
    "resnet152": "a1h_in1k", "resnet26d": "bt_in1k", "resnet50c": "gluon_in1k", "resnet50d": "ra2_in1k",
    "resnet101d": "ra2_in1k", "resnet50s": "gluon_in1k", "seresnet50": "a1_in1k", "ecaresnet50d": "miil_in1k",
    "resnext50_32x4d": "a1h_in1k", "resnext101_32x8d": "tv_in1k", "resnext101_64x4d": "c1_in1k",
    "wide_resnet50_2": "racm_in1k", "wide_resnet101_2": "tv_in1k", "seresnext50_32x4d": "racm_in1k",
}


def tags(name: str) -> list[str]:
  """The published weights tags of model `name` (timm's first, then torchvision's)."""
  return [key.partition(".")[2] for key in PUBLISHED if key.partition(".")[0] == name]


def settings(name: str, tag: str | None = None) -> EvalSettings:
  """The evaluation settings of `name`'s weights `tag` (None: timm's default tag).

  Raises:
    ValueError: no published weights for the model, or an unknown tag (the known ones are named).
  """
  known = tags(name)
  if not known:
    raise ValueError(f"{name!r} has no published ImageNet weights listed here; models with some: "
                     f"{sorted({k.partition('.')[0] for k in PUBLISHED})}")
  tag = tag or DEFAULT_TAGS.get(name, known[0])
  if tag not in known:
    raise ValueError(f"unknown weights tag {tag!r} for {name}; choose one of {known}")
  return PUBLISHED[f"{name}.{tag}"]


def evaluation_flags(name: str, tag: str | None = None) -> str:
  """How the published weights `name`.`tag` were evaluated, and the flags that evaluate them here.

  Raises:
    ValueError: no published weights for `name`, or an unknown tag.
  """
  tag = tag or DEFAULT_TAGS.get(name) or (tags(name) or [None])[0]
  s = settings(name, tag)
  published = f", published top-1 {s.top1:.3f} %" if s.top1 is not None else ""
  test = f"; timm also reports {s.test[0]} px at crop_pct {s.test[1]}" if s.test else ""
  lines = [f"Published evaluation of {name}.{tag} ({s.source}): short side resized to {s.resize_size} "
           f"({s.interpolation}, antialiased), centre crop {s.input_size} (crop_pct {s.crop_pct:.4g}), mean "
           f"{s.mean}, std {s.std}{published}{test}.",
           f"Evaluate with: --config.model.name={name} --config.data.image_size={s.input_size} "
           f"--config.data.crop_fraction={s.crop_pct:.4g} --config.data.eval_transform=resize_crop "
           f"--config.data.eval_interpolation={s.interpolation}"]
  if s.mean == IMAGENET_MEAN and s.std == IMAGENET_STD:
    return "\n".join(lines)
  differences = ["this normalisation is not selectable yet (the pipeline uses ImageNet's mean and std)"]
  lines.append("Not yet matched here (the score can differ from the published one): " + "; ".join(differences) + ".")
  return "\n".join(lines)
