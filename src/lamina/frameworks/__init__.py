"""lamina.frameworks."""
