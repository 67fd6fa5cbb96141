"""The "bag of tricks" tweaks on a small bottleneck net: ResNet-B -> C -> D (He et al. 2019), squeeze-and-excitation
(Hu et al. 2018) and stochastic depth (Huang et al. 2016), three seeds each. Does any of them change the training
or test error of a ResNet-50 at the built-in data's resolution beyond the seed-to-seed spread?

The network: ResNet-50 (bottleneck blocks 3,4,6,3) at a quarter of its width (stem 16, stages 64 to 512 channels
out, 16 to 128 inside), on the 32x32 `shapes` images with the ImageNet stem: 16x16 after the stem convolution, 8, 4,
2 and 1 pixels per stage. `resnet50` is ResNet-B (v1.5: the stride on the 3x3), `resnet50c` adds the deep stem
(three 3x3 convolutions), `resnet50d` also the average-pool downsampling shortcut, `seresnet50` is the B net with SE
in every block; each with stochastic depth off and at 0.1 (the last block's drop rate, linear from 0).

The recipe: AdamW, peak learning rate 0.01 (base_lr 0.02 per 256 images, batch 128) after the 0.1-epoch warm-up,
cosine decay, decoupled weight decay 0.05 on kernels, zero-initialised last BatchNorm of every branch, 1 epoch (390
steps), evaluated on the 10,000 test images at the half and the end, training logged every 10 steps, checkpointed
at the half (so that a killed run resumes there rather than from the start). The demo's SGD recipe (peak 0.1)
leaves this net at chance after an epoch, and so do SGD at peak 0.025 with or without zero-init, and SGD without
stem pooling (16x16 into stage 1); AdamW at peak 0.001 / 0.003 / 0.01 reached 24 / 32 / 35 % top-1 in the pilots
(seed 100), and width 0.5, batch 64 or no stem pooling gave nothing per step at 2-4x the cost. At this budget the
nets have only just left the start-up plateau, so the sweep compares how soon each variant starts learning, not
where it converges.

Cost, measured: 24 runs of 89-164 s each (start-up, compilation and the two evaluations included; 400-1000
images/s), 54 min of trainer time and 59 min of wall time on a 2-core machine that was also running other jobs
(load 4-7). What it measured: docs/ablations.md. Seeds are the outer axis, so an interrupted sweep already holds
whole seeds.
"""
CONFIG = "configs/shapes.py"
GRID = "seed=0,1,2 model.name=resnet50,resnet50c,resnet50d,seresnet50 model.drop_path_rate=0,0.1"
FLAGS = ("--config.model.width=0.25", "--config.model.zero_init_residual=true", "--config.optimizer.name=adamw",
         "--config.optimizer.weight_decay=0.05", "--config.schedule.base_lr=0.02", "--config.num_epochs=1",
         "--config.eval_every_epochs=None", "--config.eval_every_steps=195", "--config.log_every_steps=10",
         "--config.checkpoint_every_steps=195")
