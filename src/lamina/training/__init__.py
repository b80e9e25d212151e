"""lamina.training."""
