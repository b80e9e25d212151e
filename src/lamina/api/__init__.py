"""lamina.api."""
