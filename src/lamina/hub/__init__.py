"""lamina.hub: the Hugging Face Hub (``hf://org/name[@rev]``) through huggingface_hub.

Owns push (one commit, unchanged files skipped), lazy range reads pinned to a commit, and pull
through huggingface_hub's cache (``remote``); the README.md model card a push writes (``card``).
huggingface_hub is imported only inside.

May import: ``lamina.snapshot``, ``lamina.format``, ``lamina.storage`` and the base modules (a
repository source is opened by the caller, ``lamina.push``).
"""
