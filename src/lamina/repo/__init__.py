"""lamina.repo: versioned repositories (format_spec/repository.md) on any Store.

Owns :class:`~lamina.repo.repository.Repo` (refs, push, save, open, pull, log, diff, tags,
branches) and ``open_location`` (any location lamina can name), the content-addressed snapshot
view (``blobs``), the writer that streams layers into blobs (``writer``), push/gc coordination
markers (``markers``), garbage collection and fsck (``maintenance``), and the one writer path that
targets a directory or a repository (``targets``).

May import: ``lamina.hub`` (hf:// sources), ``lamina.snapshot``, ``lamina.frameworks``,
``lamina.format``, ``lamina.storage`` and the base modules.
"""
