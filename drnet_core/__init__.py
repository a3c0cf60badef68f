"""DRNet Explorer: train, evaluate and inspect Dynamic Routing Networks (arXiv 1905.04849)."""

__version__ = "1.0.0"
