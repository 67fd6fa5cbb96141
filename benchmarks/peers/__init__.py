"""The peer implementations the benchmark runs beside our step, one module each, run as
`python -m benchmarks.peers.NAME` (see resnet_jax/bench/peers.py); `harness` is their shared timing protocol."""
