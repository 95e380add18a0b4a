"""pipeline: env-configured datasets to sealed, versioned, reproducible model packages."""

__version__ = "0.1.0"
