"""One vs two hidden fully connected layers (256 units) between pooling and the classifier, with dropout 0.5 before
the classifier: the VGG-style head against the single hidden layer.
"""
CONFIG = "configs/shapes.py"
GRID = "model.head_hidden=(256,),(256,256) model.dropout=0.5"
FLAGS = ("--config.model.head=mlp",)
