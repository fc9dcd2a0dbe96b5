"""psconv: periodic-sparse convolution accelerators, from PyTorch model to bit-exact RTL."""

__version__ = "0.1.0"
