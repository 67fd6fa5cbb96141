"""Fig. 6 of He et al. 2015 on a laptop: plain and residual (shortcut A) nets at depths 20, 32, 44 and 56, three
seeds each, on `shapes/depth16` (the built-in dataset's configuration for depth studies: 16x16, a short start-up
plateau). 3 epochs of cosine decay (1170 steps of 128, the demo's recipe otherwise), evaluated every half epoch,
training logged every 10 steps (the resolution at which the escape from chance is read).

Seeds are the outer axis, so an interrupted study already holds whole seeds. Its criteria, seeds and the pilots that
chose the data were fixed before it ran: benchmarks/ablations/depth_study/CRITERIA.md. What it measured, with the
lesion of the deepest residual net and the commands: docs/ablations.md.
"""
CONFIG = "configs/shapes.py"
GRID = ("seed=0,1,2 model.name=cifar_resnet20,cifar_resnet32,cifar_resnet44,cifar_resnet56 "
        "model.shortcut=none,A")
FLAGS = ("--config.data.name=shapes/depth16", "--config.num_epochs=3", "--config.eval_every_epochs=None",
         "--config.eval_every_steps=195", "--config.log_every_steps=10")
LESION = ("seed=0,name=cifar_resnet56,shortcut=A",)  # The deepest residual net, after the sweep.
