"""lamina.storage."""
