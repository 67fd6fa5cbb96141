"""Plain vs residual (shortcut A) networks at depths 20 and 56: the degradation problem (He et al. 2015, Fig. 6).

The paper's claims: the deeper plain net has the higher training error; the deeper residual net is at least as good
as the shallower one. Sized for a 2-core CPU, each run within about 10 minutes: 4 epochs (1560 steps of 128, cosine
decay, the demo's recipe otherwise) on `shapes/px16`, the built-in dataset drawn at 16x16, evaluated every 195
steps. What it measured, with the commands and wall times: docs/ablations.md.
"""
CONFIG = "configs/shapes.py"
GRID = "model.name=cifar_resnet20,cifar_resnet56 model.shortcut=none,A"
FLAGS = ("--config.data.name=shapes/px16", "--config.data.image_size=16", "--config.num_epochs=4",
         "--config.eval_every_epochs=None", "--config.eval_every_steps=195")
