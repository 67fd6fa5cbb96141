"""Bag of Tricks on a laptop (He et al. 2019, Tables 4-6): the model tweaks and training refinements added one at a
time, each row keeping the rows above, three seeds per row. Which of them help a small bottleneck ResNet on a
training set small enough to overfit?

Rows (STEPS, cumulative): ResNet-50 v1 (stride on the first 1x1 of a downsampling block, the paper's baseline, step
decay) -> ResNet-B (stride on the 3x3) -> C (deep stem) -> D (average-pool shortcut; Table 5) -> zero-gamma (the
last BatchNorm scale of each branch at 0; 3.1, Table 4) -> cosine decay (5.1) -> label smoothing 0.1 (5.2) -> mixup
0.2 (5.4; Table 6). No bias decay (3.1) is not a row: weight decay never touches BatchNorm parameters or biases here.
Distillation (5.3) is not included.

The network: ResNet-50 (bottleneck blocks 3, 4, 6, 3) at a quarter of its width on the 32x32 `shapes` images with the
ImageNet stem (16x16 after it, then 8, 4, 2, 1 per stage), as in `resnet_tweaks`, so that B, C and D change what they
change in the paper (where the stride sits, the stem, the shortcut's pooling). SGD with Nesterov momentum (the
paper's), peak 0.05 at batch 128 after 1 warm-up epoch, step decay /10 at 50 % and 75 % of training until the cosine
row, weight decay 1e-4.

The data: the first 5,000 of the 50,000 training images of `shapes` (all 10 classes), 20 epochs (780 steps),
evaluated on the 10,000 test images. Provisional: the study has not been run, and the first pilots (seed 100, the
baseline row, 780 steps, about 4 min each on 2 shared cores) say the data and budget must change before it is:
on `shapes` the net never leaves the start-up plateau (train / test top-1 12.5 / 10.9 % with this SGD recipe,
14.5 / 14.4 % with resnet_tweaks' AdamW at peak 0.01), and on `shapes/depth16` (16 px) it stops at 27.4 / 27.8 %,
about what the colour cue of a quarter of the images gives, without overfitting. The subset size is to be chosen
where the net does overfit (training error near zero while test error rises).
"""
CONFIG = "configs/shapes.py"
GRID = "seed=0,1,2"
FLAGS = ("--config.data.train_split=train[:5000]", "--config.model.width=0.25", "--config.optimizer.name=sgd",
         "--config.optimizer.nesterov=true", "--config.optimizer.weight_decay=1e-4", "--config.schedule.base_lr=0.1",
         "--config.schedule.warmup_epochs=1", "--config.num_epochs=20", "--config.eval_every_epochs=5",
         "--config.log_every_steps=39", "--config.checkpoint_every_steps=195")
STEPS = (
    ("ResNet-50 v1", ("--config.model.name=resnet50", "--config.model.variant=v1", "--config.schedule.name=step",
                      "--config.schedule.boundaries_epochs=(10.0,15.0)")),
    ("+ ResNet-B", ("--config.model.variant=v1.5",)),
    ("+ ResNet-C", ("--config.model.name=resnet50c",)),
    ("+ ResNet-D", ("--config.model.name=resnet50d",)),
    ("+ zero-gamma", ("--config.model.zero_init_residual=true",)),
    ("+ cosine decay", ("--config.schedule.name=cosine",)),
    ("+ label smoothing", ("--config.label_smoothing=0.1",)),
    ("+ mixup", ("--config.mixing.mixup_alpha=0.2",)),
)
