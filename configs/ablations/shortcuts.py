"""Shortcut options at two depths: none (plain), A (zero-padded identity), B (projection where the shape changes), C
(projection everywhere) (He et al. 2015, section 3.3 and Table 3). Same budget as plain_vs_residual.py. What it
measured: docs/ablations.md.
"""
CONFIG = "configs/shapes.py"
GRID = "model.name=cifar_resnet20,cifar_resnet56 model.shortcut=none,A,B,C"
FLAGS = ("--config.data.name=shapes/px16", "--config.data.image_size=16", "--config.num_epochs=4",
         "--config.eval_every_epochs=None", "--config.eval_every_steps=195")
