"""The ``fhirsync`` command line: one module per command group."""
