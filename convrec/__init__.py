"""convbench library: data, the ConvRec model, training and evaluation."""

__version__ = "0.1.0"
