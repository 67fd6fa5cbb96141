"""Plain vs residual (shortcut A) networks at depths 20 and 56: the degradation problem (He et al. 2015, Fig. 6).

The paper's claims: the deeper plain net has the higher training error; the deeper residual net is at least as good
as the shallower one. Uses the harder `shapes` variant, built for depth and shortcut ablations.
"""
CONFIG = "configs/shapes.py"
GRID = "depth=20,56 shortcut=none,A"
FLAGS = ("--config.data.builder_config=hard",)
