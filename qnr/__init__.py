"""qnr: theory and simulation of learning in quadratic neural networks (JAX).

Every public name (and every submodule) is imported on first use, so ``import qnr`` is cheap.

Layers (one direction of flow): the base layer (``qnr.teachers``, ``qnr.model``) feeds
``qnr.spectra`` -> ``qnr.theory`` and, independently, ``qnr.sim``; ``qnr.sweep``,
``qnr.experiments`` (learning curve, phase diagram), ``qnr.plot``
and the ``qnr`` command line sit on top. The canonical normalization is THEORY.md section 1:
``y = (x^T S* x - Tr S*)/sqrt(d) + sqrt(Delta) xi``, ``n = alpha d^2``,
``E = ||S - S*||_F^2/d``, ``e_test = (E + Delta/2)/2``.
"""

from typing import TYPE_CHECKING

from qnr._version import __version__

# Public names -> the submodule that defines them. They are imported on first access
# (PEP 562 module ``__getattr__``), so ``import qnr`` -- and with it the ``qnr`` command line,
# whose ``--help`` and argument errors must answer in well under a second -- does not pay for
# importing JAX and the numerics until a name is actually used.
_LAZY = {
    "RESULTS": "qnr._results",
    "error_from_mmse": "qnr.model",
    "lam_from_lambda_tilde": "qnr.model",
    "lambda_tilde_from_lam": "qnr.model",
    "matrix_error": "qnr.model",
    "mmse_from_error": "qnr.model",
    "e_test_from_error": "qnr.model",
    "Dataset": "qnr.sim",
    "make_dataset": "qnr.sim",
    "make_dataset_from_matrix": "qnr.sim",
    "simulate": "qnr.sim",
    "simulate_grid": "qnr.sim",
    "convolved_law": "qnr.spectra",
    "MarchenkoPastur": "qnr.teachers",
    "PowerLaw": "qnr.teachers",
    "Spectrum": "qnr.teachers",
    "Teacher": "qnr.teachers",
    "BayesOptimal": "qnr.theory",
    "ERMProblem": "qnr.theory",
    "alpha_bo": "qnr.theory",
    "alpha_inter": "qnr.theory",
    "optimal_lam": "qnr.theory",
    "solve_bayes_optimal": "qnr.theory",
    "solve_erm": "qnr.theory",
    "solve_erm_curve": "qnr.theory",
    "solve_erm_grid": "qnr.theory",
    "strong_recovery": "qnr.theory",
}
_SUBMODULES = ("model", "sim", "spectra", "teachers", "theory", "sweep", "experiments", "plot")


def __getattr__(name):
    import importlib

    if name in _SUBMODULES:
        return importlib.import_module(f"qnr.{name}")
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'qnr' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY) | set(_SUBMODULES))


if TYPE_CHECKING:  # static analysers see the eager imports
    from qnr import model, sim, spectra, teachers, theory  # noqa: F401
    from qnr._results import RESULTS  # noqa: F401
    from qnr.model import (  # noqa: F401
        e_test_from_error,
        error_from_mmse,
        lam_from_lambda_tilde,
        lambda_tilde_from_lam,
        matrix_error,
        mmse_from_error,
    )
    from qnr.sim import (  # noqa: F401
        Dataset,
        make_dataset,
        make_dataset_from_matrix,
        simulate,
        simulate_grid,
    )
    from qnr.spectra import convolved_law  # noqa: F401
    from qnr.teachers import MarchenkoPastur, PowerLaw, Spectrum, Teacher  # noqa: F401
    from qnr.theory import (  # noqa: F401
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

# every lazily imported name is public; the heavy top-layer submodules (sweep, experiments, plot)
# are reachable as attributes but not star-imported
__all__ = ["__version__", "model", "sim", "spectra", "teachers", "theory", *_LAZY]
