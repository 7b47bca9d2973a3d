"""Attention variants: one module per variant, discovered automatically.

Drop a file here that defines a subclass of :class:`attnbench.attention.Attention`
decorated with :func:`attnbench.attention.register_variant`; nothing else to edit.
See README.md, "Adding a variant".
"""
