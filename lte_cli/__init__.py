"""The ``lte`` command line: one entry point for every process of the product."""
