"""lamina.repo."""
