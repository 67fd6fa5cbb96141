r"""ResNet-50-D with the refinements of "Bag of Tricks for Image Classification" (He et al., CVPR 2019), Table 6.

  python -m experiments.train --config=configs/imagenet_bag_of_tricks.py --workdir=runs/r50d_tricks

What each field reproduces (the paper's sections):
- Model (4.3, Table 5): ResNet-50-D (deep 3x3 stem, 2x2 average pooling before the 1x1 projection of downsampling
  shortcuts), zero-gamma: the last BatchNorm scale of each residual branch starts at 0 (3.1).
- Efficient training (3.1): batch 1024, learning rate 0.1 x batch / 256 = 0.4, 5 linear warm-up epochs, Nesterov
  momentum 0.9, weight decay 1e-4 on convolution and dense kernels only (no bias decay), bfloat16 compute (the
  paper's FP16 on V100s), BatchNorm per device as in its 8-GPU MXNet setup.
- Refinements (5, Table 6): cosine decay (5.1), label smoothing 0.1 (5.2), mixup with alpha 0.2 (5.4), trained for
  200 epochs because "mixed examples ask for a longer training" (120 without mixup: `--config.num_epochs=120
  --config.mixing.mixup_alpha=0`). Knowledge distillation (5.3) is not part of this config.
- Data (2.1): random resized crop (8-100 % of the area, aspect 3/4-4/3) to 224, horizontal flip, brightness /
  contrast / saturation jitter of 0.4; evaluation resizes the short side to 256 and centre-crops 224 (the
  torchvision-exact 'resize_crop'). Not available here: the paper's hue jitter and PCA lighting noise.

Published: ResNet-50-D 77.16 % top-1 with the efficient training alone; 79.29 % with these refinements plus
distillation (Table 6). Measured results here: none yet (ImageNet is not available on the development machine).
A recipe this size needs the batch on 8 or more accelerators, or `--config.grad_accum_steps`.
"""
from configs import default


def get_config():
  """default.py with the paper's model, schedule, loss and mixing."""
  config = default.get_config()
  config.model.name = "resnet50d"
  config.model.zero_init_residual = True
  config.batch_size = 1024
  config.eval_batch_size = 1024
  config.num_epochs = 200.0
  config.sync_batch_stats = False
  config.optimizer.name = "sgd"
  config.optimizer.nesterov = True
  config.optimizer.weight_decay = 1e-4
  config.schedule.name = "cosine"
  config.schedule.base_lr = 0.1  # Per 256 images: 0.4 at batch 1024.
  config.schedule.warmup_epochs = 5.0
  config.label_smoothing = 0.1
  config.mixing.mixup_alpha = 0.2
  config.data.color_jitter = 0.4
  config.data.crop_fraction = 0.875  # 224 / 256.
  config.data.eval_transform = "resize_crop"
  return config
