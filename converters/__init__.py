"""lamina.converters: foreign formats in and out (torch pickles, Keras ``.keras``/``.h5``, ONNX,
Hugging Face safetensors files and directories; TensorFlow checkpoints in only).

Owns one module per format with a symmetric pair ``to_lamina(src, dst, ...)`` /
``from_lamina(src, dst, ...)`` (``torch_pickle``, ``keras``, ``onnx``, ``hf`` (formats ``hf`` and ``safetensors``);
``tf_checkpoint`` has ``to_lamina`` only), their private helpers, and format detection (``_detect``). A converter
turns a foreign file into tensors, optimizer state, metadata and extra files and hands them to
the one writer path (``lamina.repo.targets.write_snapshot``), or opens a snapshot and builds the
foreign file.

May import: ``lamina.repo``, ``lamina.snapshot``, ``lamina.frameworks``, ``lamina.format``,
``lamina.storage`` and the base modules. Only ``torch_pickle`` imports torch; ``keras`` reads with
zipfile and h5py (never TensorFlow); ``onnx`` imports onnx lazily; only ``tf_checkpoint`` imports
TensorFlow (lazily; its helpers ``_tf_bundle`` and ``_tf_optim`` do not).
"""

__all__: list[str] = []
