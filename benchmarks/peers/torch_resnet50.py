"""Peer: a PyTorch ResNet-50 (v1.5) training step on CUDA or the CPU, eager or torch.compile'd.

bf16 autocast with float32 parameters when asked, channels-last tensors, SGD with momentum 0.9 (fused on CUDA; see
torch_step.py). On the CPU it first picks the faster of 1 thread and PyTorch's default. The network is torchvision's
resnet50 where torchvision is installed, otherwise the same network written for this project
(torch_bottleneck_resnet.py); the result records which. Without torch it records a skip with the reason.

  python -m benchmarks.peers.torch_resnet50 --device=cuda --batch=256 --image_size=224 --dtype=bfloat16 \
      [--compile_mode=default] --out=torch.json
"""
from __future__ import annotations

from benchmarks.peers import harness


def _resnet50(torch, num_classes: int):
  """(module, its description, versions): torchvision's resnet50 if it imports, else torch_bottleneck_resnet's."""
  if not harness.missing_modules(["torchvision"]):
    try:
      import torchvision
      return (torchvision.models.resnet50(weights=None, num_classes=num_classes), "torchvision resnet50 (v1.5)",
              {"torchvision": torchvision.__version__})
    except (ImportError, RuntimeError):  # A torchvision built for another torch fails to register its ops.
      pass
  from benchmarks.peers import torch_bottleneck_resnet
  return (torch_bottleneck_resnet.build(torch, 50, num_classes),
          "resnet50 (v1.5) in plain PyTorch (benchmarks/peers/torch_bottleneck_resnet.py)", {})


def main():
  p = harness.parser(__doc__.splitlines()[0])
  p.add_argument("--compile_mode", default="",
                 help="Empty: eager. Otherwise a torch.compile mode ('default', 'max-autotune', ...).")
  p.add_argument("--num_classes", type=int, default=1000)
  args = p.parse_args()
  peer = "torch_compile" if args.compile_mode else "torch_eager"

  missing = harness.missing_modules(["torch"])
  if missing:
    harness.skip(args.out, peer, f"missing Python module(s) {missing}: pip install torch")
  import torch

  from benchmarks.peers import torch_step

  reason = torch_step.check_device(torch, args.device)
  if reason:
    harness.skip(args.out, peer, reason)
  if args.device == "cuda":
    torch.backends.cudnn.benchmark = True  # Picks the fastest convolution algorithms for these fixed shapes.
  model, model_name, extra_versions = _resnet50(torch, args.num_classes)
  candidates = sorted({1, torch.get_num_threads()}) if args.device == "cpu" else ()
  result = torch_step.train_step_timing(torch, model, args=args, num_classes=args.num_classes, channels_last=True,
                                        compile_mode=args.compile_mode or None, thread_candidates=candidates)
  result.update(
      peer=peer, status="ok",
      framework=f"pytorch {'torch.compile mode=' + args.compile_mode if args.compile_mode else 'eager'}",
      workload={"model": model_name, "batch": args.batch, "image_size": args.image_size,
                "dtype": args.dtype, "layout": "channels_last"},
      device=torch_step.device_name(torch, args.device),
      versions={**torch_step.versions(torch), **extra_versions},
      environment=harness.environment())
  harness.write(args.out, result)
  print(f"{peer}: {result['images_per_sec']:.1f} images/s")


if __name__ == "__main__":
  main()
