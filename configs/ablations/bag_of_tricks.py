"""Bag of Tricks on a laptop (He et al. 2019, Tables 4-6): the model tweaks and training refinements added one at a
time, each row keeping the rows above, three seeds per row. Which of them help a small bottleneck ResNet that
overfits a small training set?

Rows (STEPS, cumulative): ResNet-50 v1 (stride on the first 1x1 of a downsampling block, the paper's baseline, step
decay /10 at 50 % and 75 % of training) -> ResNet-B (stride on the 3x3) -> C (deep stem) -> D (average-pool
shortcut; Table 5) -> zero-gamma (the last BatchNorm scale of each branch at 0; 3.1, Table 4) -> cosine decay (5.1)
-> label smoothing 0.1 (5.2) -> mixup 0.2 (5.4; Table 6). No bias decay (3.1) is not a row: weight decay never
touches BatchNorm parameters or biases here. Distillation (5.3) is not included.

The network: ResNet-50 (bottleneck blocks 3, 4, 6, 3) at a quarter of its width (stem 16, stages 64 to 512 channels
out, 16 to 128 inside) with the ImageNet stem's strided first convolution but no max-pool, on the 16x16
`shapes/depth16` images: 8x8 after the stem, then 8, 4, 2 and 1 pixels per stage, so that B, C and D change what
they change in the paper (where the stride sits, the stem, the shortcut's pooling). SGD with Nesterov momentum
(the paper's), peak 0.05 at batch 128 (0.1 per 256 as in the paper) after a 40-step linear warm-up, weight decay
1e-4, 900 steps; evaluated on all 10,000 test images at the half and the end.

The data, chosen by measurement (pilot runs, seed 100, disjoint from the study's seeds 0-2; the baseline net and SGD
as above, warm-up 1 epoch for 2,000-10,000 images; top-1 % train (last logged window) / test at the end; test loss
at step 500 -> the end; records in benchmarks/ablations/bag_of_tricks/pilots/):

  training images   steps  schedule  train  test   test loss        reading
  500 (50/class)    900    cosine    93.6   29.0   3.31 -> 4.59     memorises, test loss rises from step 250
  1,000             900    cosine    74.0   32.3   2.22 -> 2.85     overfits from step 500: the study's choice
  2,000             885    step      35.9   29.7   2.00 -> 1.98     still fitting
  5,000             897    step      30.1   30.1   2.52 -> 2.34     underfits
  10,000            936    cosine    35.0   36.1   1.94 -> 1.76     underfits (AdamW at peak 0.01: 38.1 / 40.8)

A test top-1 of about 32.5 % is what the colour cue alone gives (a quarter of the images paint the shape in its
class's colour: 25 % + 75 % x 10 %); above it, a net has learnt shapes. On the 32x32 `shapes` the same net with
max-pool or without never left the start-up plateau in 600-780 steps (10-15 % top-1, SGD or AdamW), which is why
the 16-pixel variant with its cue is used. 1,000 images (the first 1,000 of the 50,000; about 100 per class) is
where the baseline overfits within the budget while its training error still falls: regularisation has something
to act on. Cost, measured: 221-405 s per run with two at once on the 2 cores (`--parallel=2`: these small
convolutions leave a core idle), 60 min of wall time for the 24 runs, the first half of it beside another training
job. Run as `python -m experiments.sweep --ablation=bag_of_tricks --workdir=runs/bag_of_tricks --parallel=2`; what
it measured: docs/ablations.md ("Bag of Tricks on a laptop").
"""
CONFIG = "configs/shapes.py"
GRID = "seed=0,1,2"
FLAGS = ("--config.data.name=shapes/depth16", "--config.data.train_split=train[:1000]",
         "--config.model.width=0.25", "--config.model.stem_pool=none", "--config.optimizer.name=sgd",
         "--config.optimizer.nesterov=true", "--config.optimizer.weight_decay=1e-4", "--config.schedule.base_lr=0.1",
         "--config.schedule.warmup_epochs=None", "--config.schedule.warmup_steps=40", "--config.num_epochs=None",
         "--config.num_steps=900", "--config.eval_every_epochs=None", "--config.eval_every_steps=450",
         "--config.log_every_steps=25", "--config.checkpoint_every_steps=300")
STEPS = (
    ("ResNet-50 v1", ("--config.model.name=resnet50", "--config.model.variant=v1", "--config.schedule.name=step",
                      "--config.schedule.boundaries_steps=(450,675)")),
    ("+ ResNet-B", ("--config.model.variant=v1.5",)),
    ("+ ResNet-C", ("--config.model.name=resnet50c",)),
    ("+ ResNet-D", ("--config.model.name=resnet50d",)),
    ("+ zero-gamma", ("--config.model.zero_init_residual=true",)),
    ("+ cosine decay", ("--config.schedule.name=cosine",)),
    ("+ label smoothing", ("--config.label_smoothing=0.1",)),
    ("+ mixup", ("--config.mixing.mixup_alpha=0.2",)),
)
