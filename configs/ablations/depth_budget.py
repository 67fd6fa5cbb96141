"""The budget behind the depth study's second claim: does the residual ResNet-56 overtake the ResNet-20 when
training is longer? The depth study's setting (`shapes/depth16`, the demo's recipe, option-A shortcuts) with
12 epochs of cosine decay instead of 3 (4680 steps of 128), one seed, evaluated every half epoch.

At 3 epochs the residual ResNet-56 ends behind the ResNet-20 (docs/ablations.md, "Figure 6 with seeds"); this
sweep measures whether four times the budget reverses that. Results and command: docs/ablations.md.
"""
CONFIG = "configs/shapes.py"
GRID = "model.name=cifar_resnet20,cifar_resnet56"
FLAGS = ("--config.data.name=shapes/depth16", "--config.model.shortcut=A", "--config.num_epochs=12",
         "--config.eval_every_epochs=None", "--config.eval_every_steps=195", "--config.log_every_steps=10")
