"""Max vs average pooling in the stem (the 3x3/2 pooling after the first convolution).

Only ImageNet-style networks have a stem pool (CIFAR nets keep full resolution), so this uses ResNet-18 at a quarter
of its width (16 to 128 channels) on the 32x32 `shapes` images: feature maps of 8, 4, 2 and 1 pixels per stage.
"""
CONFIG = "configs/shapes.py"
GRID = "model.stem_pool=max,avg"
FLAGS = ("--config.model.name=resnet18", "--config.model.width=0.25")
