r"""Converts published ResNet weights into a checkpoint that `--config.init_from` loads.

  # Keras ResNet50 (v1 layout): a local weights file, 'imagenet' (downloads Keras's file), or none (random init).
  python -m experiments.convert_weights --from=keras --keras_weights=resnet50_weights_tf_dim_ordering_tf_kernels.h5 \
      --out=weights/keras_resnet50
  # torchvision / timm (v1.5 layout): a saved state_dict (needs torch), or torchvision's own weights (needs
  # torchvision). Any named ImageNet model: resnet50d, seresnet50, resnext50_32x4d, wide_resnet50_2, ...
  python -m experiments.convert_weights --from=torchvision --model=resnet50 --state_dict=resnet50.pth \
      --out=weights/tv_resnet50
  # A .safetensors file in the torchvision / timm key layout (no PyTorch needed); --tag prints how those weights
  # were evaluated when published and the flags that evaluate them here.
  python -m experiments.convert_weights --from=safetensors --safetensors=model.safetensors --model=resnet50d \
      --tag=ra2_in1k --out=weights/r50d
  # Our own random initialisation written as a torchvision-layout .safetensors file (--out ending in .safetensors
  # writes that layout from any source but Keras).
  python -m experiments.convert_weights --from=random --model=resnet18 --out=weights/resnet18_random.safetensors

The script prints the --config flags that build the matching network. A fine-tuning run with another class count
gets a freshly initialised head (resnet_jax.finetune.merge_for_finetune); add --config.freeze_backbone=True for a
linear probe, or --config.optimizer.backbone_lr_multiplier=0.1 for a smaller learning rate in the backbone.
"""
import os

from absl import app, flags

from resnet_jax import startup

flags.DEFINE_enum("from", None, ["keras", "torchvision", "safetensors", "random"],
                  "Where the weights come from (required); 'random': our own initialisation of --model.")
flags.DEFINE_string("out", None, "Directory to write the converted weights to, or a .safetensors file (torchvision / "
                    "timm layout) (required).")
flags.DEFINE_bool("overwrite", False, "Replace --out if it exists.")
flags.DEFINE_string("keras_weights", None,
                    "Keras only: a weights file of keras.applications.ResNet50 (.h5 / .weights.h5), 'imagenet' to "
                    "download Keras's, or unset for random initialisation.")
flags.DEFINE_integer("num_classes", 1000, "Keras and random only: the classifier size.")
flags.DEFINE_string("model", "resnet50", "torchvision, safetensors and random: the network, any named ImageNet "
                    "model (resnet18 ... resnet200, resnet50d, seresnet50, resnext50_32x4d, wide_resnet50_2, ...).")
flags.DEFINE_string("tag", None, "The published weights' tag (timm's, e.g. a1_in1k, ra2_in1k, tv2_in1k; or "
                    "torchvision's IMAGENET1K_V2): print how they were evaluated and the flags that do so here.")
flags.DEFINE_string("state_dict", None,
                    "torchvision only: a file saved with torch.save(model.state_dict(), FILE). Unset: build the "
                    "network with torchvision (random init, or --torchvision_weights).")
flags.DEFINE_string("torchvision_weights", None, "torchvision only, without --state_dict: a weights name for "
                    "torchvision.models.get_model, e.g. IMAGENET1K_V1 (downloads); unset for random init.")
flags.DEFINE_string("safetensors", None, "safetensors only: the .safetensors file (torchvision / timm key layout).")
flags.DEFINE_integer("seed", 0, "random only: the initialisation seed.")
FLAGS = flags.FLAGS


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  # Checked here rather than with required=True: tests import several scripts into one process.
  if not FLAGS["from"].value or not FLAGS.out:
    raise app.UsageError("--from (keras or torchvision) and --out are required (--from may also be safetensors or "
                         "random)")
  source = FLAGS["from"].value
  if os.path.exists(FLAGS.out) and not FLAGS.overwrite:  # Checked before minutes of building the network.
    raise app.UsageError(f"--out={FLAGS.out} exists; pass --overwrite or choose another directory.")
  if source == "safetensors" and not FLAGS.safetensors:
    raise app.UsageError("--from=safetensors needs --safetensors=FILE")
  startup.prepare_process()
  from resnet_jax import weights  # pylint: disable=g-import-not-at-top

  print(weights.convert(source, FLAGS.out, overwrite=FLAGS.overwrite, keras_weights=FLAGS.keras_weights,
                        num_classes=FLAGS.num_classes, model=FLAGS.model, state_dict=FLAGS.state_dict,
                        torchvision_weights=FLAGS.torchvision_weights, safetensors=FLAGS.safetensors,
                        seed=FLAGS.seed, tag=FLAGS.tag))


if __name__ == "__main__":
  startup.run(main)
