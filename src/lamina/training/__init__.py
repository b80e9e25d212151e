"""lamina.training: training checkpoints.

Owns :class:`~lamina.training.checkpoints.CheckpointManager` (checkpoints as tag-only revisions,
retention, exact resumption with RNG and scheduler state, background saves). Framework callbacks
(Keras ``BackupAndRestore``-style) and distributed checkpoints (``torch.distributed.checkpoint``
StorageWriter/Reader) belong here.

May import: ``lamina.repo``, ``lamina.snapshot``, ``lamina.frameworks`` (adapters and RNG capture),
``lamina.format``, ``lamina.storage`` and the base modules.
"""
