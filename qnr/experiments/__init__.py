"""Experiments that combine theory and simulation: the learning curve of ``qnr curve`` and the
phase diagram of ``qnr phase-diagram``.

This layer sits above :mod:`qnr.theory`, :mod:`qnr.sim` and :mod:`qnr.sweep` (it runs the
theory batch through :class:`qnr.sweep.ShardedMap` and the simulations through
:func:`qnr.sim.simulate_grid`) and below :mod:`qnr.cli`; it computes, checks agreement and
writes figures and tables.
"""

from qnr.experiments.curve import LearningCurve as LearningCurve
from qnr.experiments.curve import agreement as agreement
from qnr.experiments.curve import extrapolate_inverse_d as extrapolate_inverse_d
from qnr.experiments.curve import learning_curve as learning_curve
from qnr.experiments.curve import summarise_seeds as summarise_seeds
from qnr.experiments.curve import write_curve as write_curve
from qnr.experiments.phase import PhaseDiagram as PhaseDiagram
from qnr.experiments.phase import phase_diagram as phase_diagram
from qnr.experiments.phase import write_phase_diagram as write_phase_diagram

__all__ = [
    "LearningCurve",
    "learning_curve",
    "write_curve",
    "summarise_seeds",
    "extrapolate_inverse_d",
    "agreement",
    "PhaseDiagram",
    "phase_diagram",
    "write_phase_diagram",
]
