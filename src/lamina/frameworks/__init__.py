"""lamina.frameworks: one adapter per framework, behind one interface.

Owns: the :class:`~lamina.frameworks.base.FrameworkAdapter` interface and the framework-neutral
shapes that cross it (``base``), the registry (``registry``), model/mapping collection with tie
detection (``collect``), optimizer state by parameter name (``optim``), RNG capture (``rng``), and
one module per framework (``numpy``, ``torch``). May import: ``lamina.format``, ``lamina._errors``.
Nothing outside an adapter module (and its converter) imports its framework.
"""
