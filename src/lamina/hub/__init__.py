"""lamina.hub."""
