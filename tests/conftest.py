"""Test setup shared by the whole suite.

Four host devices are simulated on the CPU so that data-parallel code paths (meshes, shard_map, pmap, sharded
arrays) are exercised by ordinary tests. This must happen before JAX initialises its backends.
"""
import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# TensorFlow is only an input-pipeline library here: keep it off any accelerator.
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
