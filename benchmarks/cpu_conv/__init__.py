"""Single-convolution timings on the CPU: XLA's against other formulations and PyTorch's."""
