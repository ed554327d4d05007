"""medm2g engine: medical multi-modal generation with one cross-guided diffusion model.

Importable without the command line; the CLI in ``medm2g_cli`` is a thin layer over it. The public API
(:mod:`medm2g_core.api`) is available from here and imported on first use, so ``import medm2g_core`` stays
cheap::

    import medm2g_core as medm2g

    ct = medm2g.translate("t1.nii.gz", to="ct")        # the embedded default model
    medm2g.write_volume(ct, "t1_ct.nii.gz")             # marked synthetic in its header
"""

__version__ = "0.1.0"

API = ("load_model", "read_volume", "write_volume", "translate", "report", "generate")
__all__ = ["__version__", *API]


def __getattr__(name: str) -> object:
    """The API functions, imported from :mod:`medm2g_core.api` when first asked for (it imports torch)."""
    if name in API:
        from medm2g_core import api

        return getattr(api, name)
    raise AttributeError(f"module 'medm2g_core' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *API])
