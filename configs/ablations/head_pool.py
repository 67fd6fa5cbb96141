"""Global average pooling vs flattening the last feature map before the classifier (Network in Network, Lin et al.
2014): flattening keeps position and multiplies the classifier's parameters by the map's area (8x8 here).
"""
CONFIG = "configs/shapes.py"
GRID = "model.global_pool=avg,flatten"
FLAGS = ()
