"""Simulators: data, student networks, convex and message-passing solvers, dynamics.

``sim`` depends only on the base layer (``qnr.teachers``, ``qnr.model``), never on
``qnr.spectra`` or ``qnr.theory``; tests compare the two.

ERM simulations (THEORY.md section 1): :func:`simulate` (one point, arrays over seeds) and
:func:`simulate_grid` (arrays over ``(point, seed)``, one compiled program per grid) run the
convex nuclear-norm solver (:func:`solve_convex`) or an optax-trained network
(:func:`train_network`) and return a :class:`SimulationResult` whose ``summary()`` gives seed
means/stds of ``E``, ``e_test``, ``e_train`` and the rank fraction::

    res = simulate_grid(MarchenkoPastur(0.5), alpha=[0.1, 0.2, 0.3], lam=0.05, d=40, seeds=8)
    res.summary()["E_mean"], res.summary()["E_std"]

Convex solves carry a dual certificate (:func:`dual_certificate`): the certified duality gap
and a ``degenerate`` flag for non-unique minimisers (counted in ``summary()["n_degenerate"]``).

BLAS threads: importing ``qnr.sim`` sets ``OPENBLAS_NUM_THREADS=1`` unless the variable is
already set, and caps OpenBLAS pools that are already loaded (:func:`limit_blas_threads`).
jax's CPU ``eigh`` runs in OpenBLAS/LAPACK; with several OpenBLAS threads on a loaded
machine a ``100 x 100`` eigh took 190 ms instead of 1.5 ms. jax's own matrix products
(XLA/Eigen) are not affected. Set ``QNR_BLAS_THREADS=<k>`` to choose another count.
"""

from qnr.sim._threads import limit_blas_threads
from qnr.sim.convex import Factorized, ProximalGradient, duality_gap, psd_prox, solve_convex
from qnr.sim.data import Dataset, make_dataset, make_dataset_from_matrix, n_samples
from qnr.sim.erm import (
    DUAL_RANK_RTOL,
    RANK_RTOL,
    RESULTS,
    ERMProblem,
    ERMSolution,
    dual_certificate,
    numerical_rank,
)
from qnr.sim.factorized import (
    LMZ_STEP,
    FactorizedTrace,
    SensingProblem,
    factorized_gd,
    factorized_gd_init_sweep,
    factorized_sgd,
    make_sensing_problem,
    projected_gd,
    psd_projection,
)
from qnr.sim.gamp import GAMPRIE, GAMPSolution, gamp_rie, simulate_gamp
from qnr.sim.grid import (
    SIM_DEFAULTS,
    SOLVER_NAMES,
    SimulationResult,
    default_learning_rate,
    make_solver,
    run_key,
    simulate,
    simulate_grid,
    simulation_kernel,
)
from qnr.sim.landscape import (
    RankDeficientOptimum,
    below_barrier,
    energy_barrier,
    energy_barrier_gkz,
    gkz_population_risk,
    identity_multiple_init,
    min_rank_deficient_risk,
    n_star,
    optimize_rank_deficient,
    span_rank,
    sym_features,
)
from qnr.sim.network import (
    OPTIMIZERS,
    NetworkSolver,
    init_weights,
    network_loss,
    train_network,
)
from qnr.sim.online import (
    DynamicsTrace,
    OnlineProblem,
    full_batch_gd,
    full_batch_gd_sweep,
    log_steps,
    online_sgd,
    online_sgd_sweep,
    population_risk,
)
from qnr.sim.rie import RIEEstimate, empirical_hilbert, rie, rie_denoise, sample_goe
from qnr.sim.sensing import adjoint_sensing, apply_sensing, network_output

__all__ = [
    "Dataset",
    "make_dataset",
    "make_dataset_from_matrix",
    "n_samples",
    "apply_sensing",
    "adjoint_sensing",
    "network_output",
    # training dynamics (online SGD, full-batch GD)
    "OnlineProblem",
    "DynamicsTrace",
    "online_sgd",
    "online_sgd_sweep",
    "full_batch_gd",
    "full_batch_gd_sweep",
    "log_steps",
    "population_risk",
    # Li-Ma-Zhang Gaussian-measurement sensing
    "SensingProblem",
    "make_sensing_problem",
    "FactorizedTrace",
    "factorized_gd",
    "factorized_gd_init_sweep",
    "factorized_sgd",
    "projected_gd",
    "psd_projection",
    "LMZ_STEP",
    # landscape (Gamarnik-Kizildag-Zadik)
    "energy_barrier",
    "energy_barrier_gkz",
    "gkz_population_risk",
    "min_rank_deficient_risk",
    "RankDeficientOptimum",
    "optimize_rank_deficient",
    "identity_multiple_init",
    "below_barrier",
    "n_star",
    "sym_features",
    "span_rank",
    # Bayes-optimal baseline: RIE and GAMP-RIE
    "RIEEstimate",
    "rie",
    "rie_denoise",
    "empirical_hilbert",
    "sample_goe",
    "GAMPRIE",
    "GAMPSolution",
    "gamp_rie",
    "simulate_gamp",
    # ERM simulators
    "ERMProblem",
    "ERMSolution",
    "RESULTS",
    "RANK_RTOL",
    "numerical_rank",
    "ProximalGradient",
    "Factorized",
    "solve_convex",
    "psd_prox",
    "duality_gap",
    "dual_certificate",
    "DUAL_RANK_RTOL",
    "NetworkSolver",
    "OPTIMIZERS",
    "train_network",
    "init_weights",
    "network_loss",
    "simulate",
    "simulate_grid",
    "SimulationResult",
    "make_solver",
    "default_learning_rate",
    "SOLVER_NAMES",
    "SIM_DEFAULTS",
    "run_key",
    "simulation_kernel",
    "limit_blas_threads",
]
