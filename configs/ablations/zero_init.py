"""Zero-initialised last BatchNorm scale of every residual branch, on vs off (Goyal et al. 2017):
each block starts as the identity. Not defined for plain nets (their blocks would output zeros).
"""
CONFIG = "configs/shapes.py"
GRID = "model.zero_init_residual=false,true"
FLAGS = ()
