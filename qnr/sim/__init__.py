"""Simulators: data, student networks, convex and message-passing solvers, dynamics.

``sim`` depends only on the base layer (``qnr.teachers``, ``qnr.model``), never on
``qnr.spectra`` or ``qnr.theory``; tests compare the two.
"""

from qnr.sim.data import Dataset, make_dataset, make_dataset_from_matrix, n_samples
from qnr.sim.sensing import adjoint_sensing, apply_sensing, network_output

__all__ = [
    "Dataset",
    "make_dataset",
    "make_dataset_from_matrix",
    "n_samples",
    "apply_sensing",
    "adjoint_sensing",
    "network_output",
]
