"""Seeds in sequence (CPU default) or vmapped give the same simulations."""

import warnings

import jax
import numpy as np
import pytest

from qnr.sim import simulate_grid
from qnr.sim.grid import default_seed_batch_size
from qnr.teachers import MarchenkoPastur


def test_seed_batch_size_does_not_change_results():
    kw = dict(kappa=None, lam=0.05, Delta=0.1, d=12, seeds=3, key=jax.random.key(3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        runs = {
            b: simulate_grid(MarchenkoPastur(0.5), [0.4, 0.8], seed_batch_size=b, **kw)
            for b in (None, 1)
        }
    for b in (1,):
        # the same teacher, data and solver per (point, seed): equal up to the certified gap
        np.testing.assert_allclose(runs[b].E, runs[None].E, rtol=1e-4)
        np.testing.assert_array_equal(runs[b].converged, runs[None].converged)
    # one seed at a time: each seed stops at its own iteration count
    assert np.all(runs[1].iterations > 0)
    assert default_seed_batch_size() == (1 if jax.default_backend() == "cpu" else None)


@pytest.mark.parametrize("bad", [0, -1, "all", 1.5])
def test_seed_batch_size_is_validated(bad):
    with pytest.raises(ValueError, match="seed_batch_size"):
        simulate_grid(MarchenkoPastur(0.5), 0.4, d=8, seeds=2, seed_batch_size=bad)
