"""ReLU vs sigmoid vs tanh as the network's activation (every block and the stem).

Saturating activations shrink gradients through deep stacks; with BatchNorm and shortcuts the gap narrows.
"""
CONFIG = "configs/shapes.py"
GRID = "model.activation=relu,sigmoid,tanh"
FLAGS = ()
