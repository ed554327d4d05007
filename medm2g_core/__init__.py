"""medm2g engine: medical multi-modal generation with one cross-guided diffusion model.

Importable without the command line; the CLI in ``medm2g_cli`` is a thin layer over it.
"""

__version__ = "0.1.0"
