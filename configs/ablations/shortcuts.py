"""Shortcut options at two depths: none (plain), A (zero-padded identity), B (projection where the shape changes), C
(projection everywhere) (He et al. 2015, section 3.3 and Table 3). Same budget as plain_vs_residual.py.
"""
CONFIG = "configs/shapes.py"
GRID = "depth=20,56 shortcut=none,A,B,C"
FLAGS = ("--config.data.name=shapes/px16", "--config.data.image_size=16", "--config.num_epochs=4",
         "--config.eval_every_epochs=None", "--config.eval_every_steps=195")
