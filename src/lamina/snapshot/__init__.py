"""lamina.snapshot."""
