"""The stored records of a prepared TFDS dataset: a split's size and files, its serialized examples in stored
order, and the parser that turns one into (encoded image bytes, label).

Shared by the dataset functions (datasets.py), the pipelines (pipeline.py), class-folder export (folder.py) and
predictions, so that none of them imports another for it.
"""
import tensorflow as tf
import tensorflow_datasets as tfds


def split_info(builder, split):
  """TFDS's SplitInfo of `split` (a split name or `tfds.even_splits` part); a clear error for an unknown split."""
  try:
    return builder.info.splits[split]
  except (KeyError, ValueError) as error:
    raise ValueError(f"Unknown split {split!r} for {builder.name}; it has {sorted(builder.info.splits)}: set "
                     f"--config.data.train_split / --config.data.eval_split to one of them.") from error


def file_instructions(builder, split) -> tuple[list[str], list[int], list[int]]:
  """(file names, records to skip in each, records to take from each) of `split`, in stored order."""
  if builder.info.file_format != tfds.core.FileFormat.TFRECORD:
    raise ValueError(f"{builder.name} is stored as {builder.info.file_format.value}; this pipeline reads TFRecord "
                     "files: prepare the dataset again with the default file format.")
  instructions = [i for i in split_info(builder, split).file_instructions if i.take > 0]
  return ([i.filename for i in instructions], [i.skip for i in instructions], [i.take for i in instructions])


def read_split(builder, split) -> tf.data.Dataset:
  """Serialized records of `split` (a split name or `tfds.even_splits` part) in their stored order."""
  filenames, skips, takes = file_instructions(builder, split)
  files = tf.data.Dataset.from_tensor_slices((tf.constant(filenames, tf.string), tf.constant(skips, tf.int64),
                                              tf.constant(takes, tf.int64)))
  return files.flat_map(lambda name, skip, take: tf.data.TFRecordDataset(name).skip(skip).take(take))


def load_records(builder, split) -> tf.Tensor:
  """All serialized records of a split (part), as one in-memory string tensor."""
  num_examples = split_info(builder, split).num_examples
  return read_split(builder, split).batch(max(num_examples, 1)).get_single_element()


def parse_fn(builder):
  """A function: serialized record -> (encoded image bytes, int32 label), the image left undecoded."""
  features = builder.info.features
  decoders = {"image": tfds.decode.SkipDecoding()}

  def parse(record):
    example = features.deserialize_example(record, decoders=decoders)
    return example["image"], tf.cast(example["label"], tf.int32)
  return parse
