"""Built-in tasks: ``theory`` (ERM replica fixed point), ``simulation`` (convex nuclear-norm
solver on the PSD cone) and ``both`` (the two side by side)."""

from __future__ import annotations

from qnr.sweep._task import Task

__all__ = ["builtin_task"]


def builtin_task(kind: str) -> Task:
    raise ValueError(f"built-in task {kind!r} is not available in this version of qnr")
