"""Training: recipes, the shared accelerate trainer, and one module per stage of the paper."""
