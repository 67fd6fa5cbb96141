"""Shortcut options at two depths: none (plain), A (zero-padded identity), B (projection where the shape changes), C
(projection everywhere) (He et al. 2015, section 3.3 and Table 3). Same budget as plain_vs_residual.py.

Measured (README, "Ablations", one seed): A, B, C in that order at both depths (test error 11.7, 16.7, 17.1 % at 20
layers; 57.3, 64.1, 82.4 % at 56), the reverse of the paper's fully trained ImageNet ordering; the C net at 56
layers takes 12 minutes on 2 cores.
"""
CONFIG = "configs/shapes.py"
GRID = "depth=20,56 shortcut=none,A,B,C"
FLAGS = ("--config.data.name=shapes/px16", "--config.data.image_size=16", "--config.num_epochs=4",
         "--config.eval_every_epochs=None", "--config.eval_every_steps=195")
