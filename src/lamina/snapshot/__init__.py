"""lamina.snapshot: one snapshot, written and read.

Owns laying a snapshot out from collected tensors (``build``), the writers (``writer``: the
shared shard/file logic and the atomic directory writer), the verified lazy reader (``reader``),
the :class:`~lamina.snapshot.artifact.Artifact` view (``artifact``), opening a plain snapshot
(``open``), copying one between stores (``transfer``), comparing two (``diff``), the sha256 blob
cache for remote reads (``cache``), training state with tensors (``training_state``) and the
inspect summary (``summary``).

May import: ``lamina.frameworks`` (the adapter interface, the registry, collection and the
framework-neutral optimizer shapes — never an adapter module), ``lamina.format``,
``lamina.storage``, ``lamina._errors``, ``lamina._parallel``, ``lamina._version``.
"""
