"""An example third-party vertebra plugin: one tiny backbone, found through the ``vertebra`` entry point."""

__version__ = "0.1.0"
