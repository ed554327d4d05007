"""The ``medm2g`` command line: thin typer commands over :mod:`medm2g_core`."""
