"""lamina.storage: where bytes live.

Owns the :class:`~lamina.storage.base.Store` interface (byte-range reads, atomic writes, listing,
deletion, compare-and-swap) and its backends: ``local`` (a directory; also safe local file
reading), ``fsspec_store`` (s3://, memory://, ...), ``http_store`` (read-only HTTP(S) with body
caps and deadlines, ``http_deadline``); ``locations`` (a path or URI -> a Store, ``@ref``
splitting) and ``paths`` (relative path validation, spec §2.2).

May import: ``lamina._errors``, ``lamina._parallel`` only. Knows nothing of manifests or tensors.
"""
