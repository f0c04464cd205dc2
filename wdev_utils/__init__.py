"""wdev_utils: train, store and measure how weights deviate from their initial values."""
__version__ = "0.1.0"
