"""Peer: a CIFAR ResNet (He et al. 2015, section 4.2) in eager PyTorch, trained with SGD + momentum.

The network is written here from the paper: a 3x3 conv with 16 filters, three stages of n basic blocks with
16/32/64 filters on 32/16/8 maps, global average pooling and a 10-way linear layer; depth = 6n + 2. Shortcut
option A: identity, subsampled and zero-padded in channels where the shape changes (no parameters).
ResNet-56 has 853,018 parameters.

  python -m benchmarks.peers.torch_cifar_resnet --depth=56 --batch=128 --image_size=32 --out=r56.json
"""
from __future__ import annotations

from benchmarks.peers import harness

PEER = "torch_cifar"


def build(torch, depth: int, num_classes: int = 10):
  """The CIFAR ResNet of `depth` (6n + 2) as a torch.nn.Module."""
  nn = torch.nn
  F = torch.nn.functional
  if depth < 8 or (depth - 2) % 6:
    raise ValueError(f"CIFAR ResNet depth must be 6n + 2 (20, 32, 44, 56, 110, ...), got {depth}")
  blocks_per_stage = (depth - 2) // 6

  class Block(nn.Module):
    def __init__(self, in_channels, channels, stride):
      super().__init__()
      self.conv1 = nn.Conv2d(in_channels, channels, 3, stride, 1, bias=False)
      self.bn1 = nn.BatchNorm2d(channels)
      self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
      self.bn2 = nn.BatchNorm2d(channels)
      self.stride = stride
      self.extra_channels = channels - in_channels

    def forward(self, x):
      y = F.relu(self.bn1(self.conv1(x)))
      y = self.bn2(self.conv2(y))
      shortcut = x[:, :, ::self.stride, ::self.stride] if self.stride > 1 else x
      if self.extra_channels:
        # F.pad pads the last dimensions first: (W left, W right, H top, H bottom, C front, C back).
        shortcut = F.pad(shortcut, (0, 0, 0, 0, 0, self.extra_channels))
      return F.relu(y + shortcut)

  class CifarResNet(nn.Module):
    def __init__(self):
      super().__init__()
      self.conv = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
      self.bn = nn.BatchNorm2d(16)
      layers, channels = [], 16
      for stage, width in enumerate((16, 32, 64)):
        for j in range(blocks_per_stage):
          layers.append(Block(channels, width, 2 if stage > 0 and j == 0 else 1))
          channels = width
      self.blocks = nn.Sequential(*layers)
      self.fc = nn.Linear(64, num_classes)
      for m in self.modules():
        if isinstance(m, nn.Conv2d):
          nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
      x = self.blocks(F.relu(self.bn(self.conv(x))))
      return self.fc(x.mean(dim=(2, 3)))

  return CifarResNet()


def main():
  p = harness.parser(__doc__.splitlines()[0])
  p.add_argument("--depth", type=int, default=56, help="6n + 2.")
  p.add_argument("--layout", choices=("channels_last", "channels_first"), default="channels_last",
                 help="Memory format (channels-last measured 1.27x faster on a 2-core CPU at batch 128).")
  p.add_argument("--threads", type=int, default=0,
                 help="torch intra-op threads; 0 (CPU): the faster of 1 and PyTorch's default, tried first.")
  p.add_argument("--compile_mode", default="", help="Non-empty: torch.compile the model with this mode.")
  p.add_argument("--profile_steps", type=int, default=0,
                 help="Instead of timing: profile this many steps with torch.profiler and write the breakdown.")
  args = p.parse_args()

  missing = harness.missing_modules(["torch"])
  if missing:
    harness.skip(args.out, PEER, f"missing Python module(s) {missing}: pip install torch")
  import torch

  from benchmarks.peers import torch_step

  reason = torch_step.check_device(torch, args.device)
  if reason:
    harness.skip(args.out, PEER, reason)
  if args.threads:
    torch.set_num_threads(args.threads)
  candidates = sorted({1, torch.get_num_threads()}) if args.device == "cpu" and not args.threads else ()
  model = build(torch, args.depth)
  if args.profile_steps:
    result = torch_step.profile_breakdown(torch, model, args=args, num_classes=10,
                                          channels_last=args.layout == "channels_last", thread_candidates=candidates)
    harness.write(args.out, {**result, "peer": PEER, "status": "ok", "versions": torch_step.versions(torch)})
    return
  result = torch_step.train_step_timing(torch, model, args=args, num_classes=10,
                                        channels_last=args.layout == "channels_last",
                                        compile_mode=args.compile_mode or None, thread_candidates=candidates)
  result.update(
      peer=PEER, status="ok", framework="pytorch eager" if not args.compile_mode else "pytorch compile",
      workload={"model": f"cifar_resnet{args.depth}", "shortcut": "A", "batch": args.batch,
                "image_size": args.image_size, "dtype": args.dtype, "layout": args.layout},
      device=torch_step.device_name(torch, args.device), versions=torch_step.versions(torch),
      environment=harness.environment())
  harness.write(args.out, result)
  print(f"{PEER}: {result['images_per_sec']:.1f} images/s")


if __name__ == "__main__":
  main()
