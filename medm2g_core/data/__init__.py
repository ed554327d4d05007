"""Paired data: manifests, dataset adapters, the model-ready cache, integrity checks."""
