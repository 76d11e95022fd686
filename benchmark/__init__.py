"""ldct-bench: the matrix runner, config, data and CLI of the low-dose CT loss benchmark."""

__version__ = "0.1.0"
