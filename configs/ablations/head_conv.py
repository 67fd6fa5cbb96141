"""Dense classifier vs the same classifier as a 1x1 convolution before global average pooling.

Average pooling is linear, so the two heads compute the same function of the same weights (FCN, Long et al. 2015);
the curves should agree up to the nondeterminism of floating-point summation order.
"""
CONFIG = "configs/shapes.py"
GRID = "model.head=dense,conv"
FLAGS = ()
