"""lamina.format."""
