"""Mixup and CutMix on one device's slice of a batch, and the soft targets they train against.

Per batch, as timm's `Mixup` does in its default 'batch' mode: with probability `prob` the slice is mixed with
itself in reverse order (example i with example B-1-i) by one draw of lambda; where both methods are on, CutMix is
chosen with probability `switch_prob`, otherwise the one that is on. Mixup: lambda ~ Beta(mixup_alpha, mixup_alpha),
images lambda * x + (1 - lambda) * x_reversed. CutMix: lambda ~ Beta(cutmix_alpha, cutmix_alpha), a box of
int(H * sqrt(1 - lambda)) x int(W * sqrt(1 - lambda)) centred on a uniform pixel, clipped to the image, is pasted
from the reversed slice, and lambda is corrected to the pasted box's area (1 - area / (H * W)). The targets are
lambda * y + (1 - lambda) * y_reversed, where y is the one-hot label smoothed by `label_smoothing` (on 1 - s + s / C,
off s / C), so mixing and smoothing combine as in timm's `mixup_target`.

Every draw is a function of the key alone; the trainer derives it from (seed, step, device, micro-batch), like the
dropout noise, so a resumed run mixes exactly as the uninterrupted one.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class Mixing:
  """config.mixing: mixup and CutMix settings (all off by default)."""
  mixup_alpha: float = 0.0  # Beta(alpha, alpha) of mixup's lambda; 0: no mixup.
  cutmix_alpha: float = 0.0  # Beta(alpha, alpha) of CutMix's lambda; 0: no CutMix.
  prob: float = 1.0  # Probability that a batch slice is mixed at all.
  switch_prob: float = 0.5  # With both on: probability of CutMix rather than mixup.

  @property
  def enabled(self) -> bool:
    return (self.mixup_alpha > 0 or self.cutmix_alpha > 0) and self.prob > 0


def smoothed_one_hot(labels: jax.Array, num_classes: int, label_smoothing: float = 0.0) -> jax.Array:
  """One-hot targets mixed with `label_smoothing` of the uniform distribution (on 1 - s + s / C, off s / C)."""
  return jax.nn.one_hot(labels, num_classes) * (1.0 - label_smoothing) + label_smoothing / num_classes


def cutmix_box(key: jax.Array, height: int, width: int, lam: jax.Array):
  """(y0, y1, x0, x1) of CutMix's box for `lam`: sides int(size * sqrt(1 - lam)) centred on a uniform pixel, clipped."""
  ratio = jnp.sqrt(1.0 - lam)
  cut_h = jnp.floor(height * ratio).astype(jnp.int32)
  cut_w = jnp.floor(width * ratio).astype(jnp.int32)
  key_y, key_x = jax.random.split(key)
  cy = jax.random.randint(key_y, (), 0, height)
  cx = jax.random.randint(key_x, (), 0, width)
  return (jnp.clip(cy - cut_h // 2, 0, height), jnp.clip(cy + cut_h // 2, 0, height),
          jnp.clip(cx - cut_w // 2, 0, width), jnp.clip(cx + cut_w // 2, 0, width))


def mix(key: jax.Array, images: jax.Array, labels: jax.Array, num_classes: int, settings: Mixing,
        label_smoothing: float = 0.0):
  """Mixes one slice [B, H, W, C] with its reverse.

  Returns:
    (images, targets [B, num_classes], dominant labels [B] (the label whose share of the target is >= 1/2), lam).
  """
  key_apply, key_switch, key_cutmix, key_mixup, key_box = jax.random.split(key, 5)
  one_hot = smoothed_one_hot(labels, num_classes, label_smoothing)
  if not settings.enabled:
    return images, one_hot, labels, jnp.float32(1.0)
  if settings.mixup_alpha > 0 and settings.cutmix_alpha > 0:
    use_cutmix = jax.random.uniform(key_switch) < settings.switch_prob
  else:
    use_cutmix = jnp.bool_(settings.cutmix_alpha > 0)
  cutmix_alpha, mixup_alpha = max(settings.cutmix_alpha, 1e-6), max(settings.mixup_alpha, 1e-6)  # (unused when 0)
  lam_cutmix = jax.random.beta(key_cutmix, cutmix_alpha, cutmix_alpha).astype(jnp.float32)
  lam_mixup = jax.random.beta(key_mixup, mixup_alpha, mixup_alpha).astype(jnp.float32)
  applied = jax.random.uniform(key_apply) < settings.prob

  reversed_images = images[::-1]
  height, width = images.shape[1:3]
  y0, y1, x0, x1 = cutmix_box(key_box, height, width, lam_cutmix)
  rows = jnp.arange(height)[:, None]
  cols = jnp.arange(width)[None, :]
  inside = (rows >= y0) & (rows < y1) & (cols >= x0) & (cols < x1)
  cutmixed = jnp.where(inside[None, :, :, None], reversed_images, images)
  lam_box = 1.0 - ((y1 - y0) * (x1 - x0)).astype(jnp.float32) / (height * width)
  mixed = (images * lam_mixup + reversed_images * (1.0 - lam_mixup)).astype(images.dtype)

  lam = jnp.where(applied, jnp.where(use_cutmix, lam_box, lam_mixup), 1.0)
  out = jnp.where(applied, jnp.where(use_cutmix, cutmixed, mixed), images)
  targets = one_hot * lam + one_hot[::-1] * (1.0 - lam)
  dominant = jnp.where(lam >= 0.5, labels, labels[::-1])
  return out, targets, dominant, lam
