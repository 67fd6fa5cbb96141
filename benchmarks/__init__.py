"""Measurement scripts, peer implementations and recorded results; run the scripts from the repository root as
modules (`python -m benchmarks.peers.torch_resnet50 ...`), so that they import each other and `resnet_jax` as
packages."""
