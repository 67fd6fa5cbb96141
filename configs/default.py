"""ImageNet ResNet-50 v1.5, the standard 90-epoch recipe (Goyal et al. 2017).

SGD with Nesterov momentum 0.9, lr 0.1 x batch/256 with 5 linear warmup epochs then cosine decay, weight decay 1e-4
on kernels only (not on BatchNorm parameters or biases), global batch 1024, bf16 compute on accelerators.

Command (after `python -m experiments.prepare_data --dataset=imagenet2012 --manual_dir=DIR`):

  python -m experiments.train --config=configs/default.py --workdir=runs/imagenet_r50

Measured results: none yet. Published single-crop anchor for this recipe: about 76 % top-1.
All other configs import this one and override a few fields.
"""
import ml_collections
from ml_collections.config_dict import placeholder

from resnet_jax import models


def get_config():
  """Returns the base configuration; every field is documented inline."""
  config = ml_collections.ConfigDict()
  config.seed = 0  # Seeds parameter init, dropout and the data order.

  # Every knob of resnet_jax.models.ResNet that a config sets, declared and documented there (docs/models.md has
  # the table); None keeps the model's default. The compute dtype is `config.dtype`, and BatchNorm's cross-device
  # axis follows `config.sync_batch_stats`.
  config.model = ml_collections.ConfigDict(
      {name: placeholder(spec["config_type"]) for name, spec in models.knob_specs().items() if not spec["set_by"]})
  config.model.name = "resnet50"  # One of resnet_jax.models.names(): the network, depth included.

  config.dtype = "bfloat16"  # Compute dtype; parameters and BatchNorm statistics stay float32.

  config.data = ml_collections.ConfigDict()  # The dataset and its input pipeline.
  config.data.name = "imagenet2012"  # A TFDS name, 'shapes' (built in), 'folder:PATH' or 'synthetic' (no TF).
  config.data.builder_config = placeholder(str)  # TFDS builder config.
  config.data.data_dir = placeholder(str)  # TFDS data dir; None = default.
  config.data.preprocess = "imagenet"  # Augmentation family: 'imagenet' or 'cifar'; None: 'imagenet' from 64 px.
  config.data.image_size = 224  # Training crop size (and evaluation's unless eval_image_size is set).
  config.data.eval_image_size = placeholder(int)  # Evaluation crop size; None: image_size (FixRes tests larger).
  config.data.crop_fraction = 0.875  # Eval centre crop / short side (timm's crop_pct; ImageNet family).
  config.data.eval_transform = "crop_resize"  # 'crop_resize' (fast) or 'resize_crop' (torchvision / timm exact).
  config.data.eval_interpolation = "bilinear"  # 'bilinear' or 'bicubic' ('resize_crop' only).
  config.data.train_split = "train"  # TFDS split to train on.
  config.data.eval_split = "validation"  # TFDS split to evaluate on (every example exactly once).
  config.data.shuffle_buffer = 8 * 1024  # Window of the seeded shuffle per process (~4 windows in memory).
  config.data.cache = False  # Cache decoded-free records in memory (small datasets only).
  config.data.num_parallel_calls = -1  # tf.data parallelism; -1 = AUTOTUNE.
  config.data.autotune = True  # tf.data's autotuner picks parallelism and buffer sizes as the run goes.
  config.data.num_classes = placeholder(int)  # None = from the dataset.
  config.data.flip = True  # Random horizontal flips in training (both families).
  config.data.rotation_degrees = 0.0  # Training: random rotation by up to this many degrees either way; 0 = off.
  config.data.color_jitter = 0.0  # Training: brightness, contrast, saturation x U[1-s, 1+s] for s = this; 0 = off.
  config.data.augment = ""  # Training policy, timm's spelling: 'rand-m9-mstd0.5-inc1', 'trivial', 'original'; '' off.
  config.data.random_erasing = 0.0  # Training: probability of erasing a rectangle with noise (timm's 'pixel').
  config.data.repeated_augmentation = 1  # Training: each image this many times per batch, differently augmented.

  config.batch_size = 1024  # Global training batch over all devices and processes.
  config.eval_batch_size = 1024  # Global evaluation batch (the last batch is padded and masked).
  config.num_epochs = 90.0  # Set this or num_steps.
  config.num_steps = placeholder(int)  # Set this or num_epochs.

  config.optimizer = ml_collections.ConfigDict()  # What turns gradients into updates.
  config.optimizer.name = "sgd"  # 'sgd', 'lars', 'adamw', 'lamb'.
  config.optimizer.momentum = 0.9  # SGD / LARS momentum (beta1 for Adam-type); 0 for plain SGD.
  config.optimizer.nesterov = True  # Nesterov momentum for SGD and LARS.
  config.optimizer.b2 = 0.999  # AdamW / LAMB second-moment decay.
  config.optimizer.eps = placeholder(float)  # AdamW / LAMB epsilon; None: their papers' 1e-8 (AdamW), 1e-6 (LAMB).
  config.optimizer.trust_coefficient = 0.001  # LARS trust coefficient (You et al. 2017).
  config.optimizer.weight_decay = 1e-4  # Applied to kernels only, never to BatchNorm or biases.
  config.optimizer.grad_clip_norm = placeholder(float)  # Global-norm clip.
  config.optimizer.ema_decay = placeholder(float)  # EMA of params for eval.
  config.optimizer.backbone_lr_multiplier = 1.0  # Learning rate outside the head, x this (0: backbone params fixed).

  config.schedule = ml_collections.ConfigDict()  # The learning rate over the run.
  config.schedule.name = "cosine"  # 'cosine', 'step', 'polynomial', 'constant'.
  config.schedule.base_lr = 0.1  # Learning rate per `reference_batch` images (linear scaling rule).
  config.schedule.reference_batch = 256  # lr = base_lr * batch_size / reference_batch.
  config.schedule.warmup_epochs = 5.0  # Or warmup_steps.
  config.schedule.warmup_steps = placeholder(int)  # Or warmup_epochs.
  config.schedule.boundaries_epochs = placeholder(tuple)  # 'step' schedule.
  config.schedule.boundaries_steps = placeholder(tuple)  # 'step' schedule.
  config.schedule.decay_factor = 0.1  # 'step' schedule multiplier at each boundary.
  config.schedule.end_lr = 0.0  # Final learning rate of 'cosine' and 'polynomial'.
  config.schedule.power = 2.0  # 'polynomial' power.

  config.label_smoothing = 0.0  # Weight of the uniform distribution in the targets (both losses).
  config.loss = "softmax_xent"  # 'softmax_xent' or 'sigmoid_xent' (per-class binary, ResNet strikes back).
  config.bce_target_threshold = placeholder(float)  # sigmoid_xent: targets > this become 1, others 0; None: soft.
  # Mixup / CutMix per device slice of each batch (resnet_jax/mixing.py); both alphas 0 = off.
  config.mixing = ml_collections.ConfigDict()
  config.mixing.mixup_alpha = 0.0  # Beta(alpha, alpha) of mixup's lambda; 0: no mixup.
  config.mixing.cutmix_alpha = 0.0  # Beta(alpha, alpha) of CutMix's lambda; 0: no CutMix.
  config.mixing.prob = 1.0  # Probability that a batch slice is mixed at all.
  config.mixing.switch_prob = 0.5  # With both on: probability of CutMix rather than mixup.
  config.grad_accum_steps = 1  # Micro-batches per update (batch_size / this at a time); one all-reduce per update.
  config.sync_batch_stats = True  # BatchNorm statistics over the global batch (cross-device).
  config.parallelism = "shard_map"  # 'shard_map' (recommended) or 'pmap'.

  config.log_every_steps = 100  # Console / metrics.jsonl / TensorBoard training lines.
  config.eval_every_steps = placeholder(int)  # Or eval_every_epochs.
  config.eval_every_epochs = 1.0  # Or eval_every_steps.
  config.checkpoint_every_steps = 1000  # Asynchronous Orbax saves (also at the end and on preemption).
  config.checkpoint_every_epochs = placeholder(float)  # Or checkpoint_every_steps.
  config.keep_checkpoints = 3  # Keep the last K checkpoints.
  config.keep_checkpoint_every_steps = placeholder(int)  # Also keep every M.

  config.init_from = placeholder(str)  # Checkpoint/weights to fine-tune from.
  config.reinit_head = False  # A fresh head even where the loaded one fits (new classes, as many as before).
  config.freeze_backbone = False  # Train only the head (linear probe) when fine-tuning.

  config.compilation_cache_dir = "~/.cache/resnet_jax/xla"  # Persistent XLA cache; '' disables it.
  config.platform_xla_flags = True  # Add resnet_jax/xla_flags.py's measured flags for the platform (CPU only now).
  config.profile_steps = placeholder(tuple)  # (start, stop) profiler trace.
  return config
