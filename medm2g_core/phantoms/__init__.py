"""The paired phantom world: brain (CT + five MRI contrasts) and chest (CT + DRR X-ray) cases with reports."""
