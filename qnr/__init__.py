"""qnr: theory and simulation of learning in quadratic neural networks (JAX).

Submodules ``qnr.sweep`` (resumable sharded sweeps) and ``qnr.plot`` are imported on demand.

Layers (one direction of flow): the base layer (``qnr.teachers``, ``qnr.model``) feeds
``qnr.spectra`` -> ``qnr.theory`` and, independently, ``qnr.sim``; ``qnr.sweep``, ``qnr.plot``
and the ``qnr`` command line sit on top. The canonical normalization is THEORY.md section 1:
``y = (x^T S* x - Tr S*)/sqrt(d) + sqrt(Delta) xi``, ``n = alpha d^2``,
``E = ||S - S*||_F^2/d``, ``e_test = (E + Delta/2)/2``.
"""

from qnr import model, sim, spectra, teachers, theory
from qnr._version import __version__
from qnr.model import (
    error_from_mmse,
    lam_from_lambda_tilde,
    lambda_tilde_from_lam,
    matrix_error,
    mmse_from_error,
    test_error,
)
from qnr.sim import Dataset, make_dataset, make_dataset_from_matrix, simulate, simulate_grid
from qnr.spectra import convolved_law
from qnr.teachers import MarchenkoPastur, PowerLaw, Spectrum, Teacher
from qnr.theory import (
    BayesOptimal,
    ERMProblem,
    alpha_bo,
    alpha_inter,
    optimal_lam,
    solve_bayes_optimal,
    solve_erm,
    solve_erm_curve,
    solve_erm_grid,
    strong_recovery,
)

__all__ = [
    "__version__",
    "model",
    "sim",
    "spectra",
    "teachers",
    "theory",
    "convolved_law",
    "ERMProblem",
    "solve_erm",
    "solve_erm_grid",
    "solve_erm_curve",
    "strong_recovery",
    "alpha_bo",
    "alpha_inter",
    "optimal_lam",
    "BayesOptimal",
    "solve_bayes_optimal",
    "simulate",
    "simulate_grid",
    "Teacher",
    "MarchenkoPastur",
    "PowerLaw",
    "Spectrum",
    "Dataset",
    "make_dataset",
    "make_dataset_from_matrix",
    "matrix_error",
    "test_error",
    "mmse_from_error",
    "error_from_mmse",
    "lambda_tilde_from_lam",
    "lam_from_lambda_tilde",
]
