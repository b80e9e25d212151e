"""lamina.api: the implementations behind the public façade (``lamina/__init__.py``).

Owns ``save`` and ``open`` (``snapshots``), ``convert`` (``convert``: format detection and the
converter modules), ``push`` and ``pull`` (``publish``: repositories or the hub), and ``diff``.
Nothing in the library imports this package or the façade; only the CLI sits above it.

May import every package below it.
"""
