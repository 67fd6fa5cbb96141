"""Plain vs residual (shortcut A) networks at depths 20 and 56: the degradation problem (He et al. 2015, Fig. 6).

The paper's claims: the deeper plain net has the higher training error; the deeper residual net is at least as good
as the shallower one. Sized for a 2-core CPU, each run within about 10 minutes: 4 epochs (1560 steps of 128, cosine
decay, the demo's recipe otherwise) on `shapes/px16`, the built-in dataset drawn at 16x16 (a quarter of the compute
per image of the 32x32 default, where one epoch was all a 56-layer net could train in 10 minutes, and both stayed
at chance), evaluated every 195 steps. Measured with these settings (README, "Ablations"; also at 2.5 epochs with
two seeds): 3.8 and 10.0-10.2 minutes per 20- and 56-layer run; the plain 56-layer net never leaves chance while
the plain 20-layer net learns (consistent with the first claim); the residual 56-layer net learns but ends well
behind the residual 20-layer one (second claim not confirmed at this budget).
"""
CONFIG = "configs/shapes.py"
GRID = "depth=20,56 shortcut=none,A"
FLAGS = ("--config.data.name=shapes/px16", "--config.data.image_size=16", "--config.num_epochs=4",
         "--config.eval_every_epochs=None", "--config.eval_every_steps=195")
