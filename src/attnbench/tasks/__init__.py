"""Benchmark tasks: one module per task, discovered automatically.

A task module defines a subclass of :class:`attnbench.tasks.base.Task` decorated
with :func:`attnbench.tasks.base.register_task`. Third-party packages add tasks
through the entry-point group ``attnbench.tasks``.
"""
