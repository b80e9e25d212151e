"""lamina.format: the bytes of ``format_spec/``, as code.

Owns the manifest structures (``manifest``) and their msgpack codec with validation and
versioning (``codec``, whose field validators are ``_validate``), format 1.3's per-layer records
(``records``) and the lazy read view over them (``view``), the safetensors shard layout and header parser (``shards``), the dtype
table (``dtypes``), the layer -> shard file-name rule (``naming``), and the repository layout:
blob paths, ref names, revision objects (``repository``).

May import: ``lamina.storage`` (path validation), ``lamina._errors``. Pure data: no framework, no I/O.
"""
