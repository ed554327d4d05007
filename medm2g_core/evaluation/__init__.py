"""Metrics, the report labeler and benchmark tasks mirroring the paper's tables."""
