"""qnr's result codes: :class:`RESULTS` extends ``optimistix.RESULTS`` with qnr's own failures.

Every solver returns a ``result`` field of this enumeration; ``RESULTS.successful`` is the only
success. Under ``vmap`` the failed lanes carry their code and NaN outputs.
"""

from __future__ import annotations

import optimistix as optx

__all__ = ["RESULTS", "result_code", "result_names"]


class RESULTS(optx.RESULTS):  # pyright: ignore[reportGeneralTypeIssues]
    """``optimistix.RESULTS`` plus qnr's codes."""

    invariant_violated = (
        "The solution violates an invariant of its problem (E >= 0, 0 <= rank <= "
        "min(1, kappa), or its residual exceeds the tolerance); it is not returned."
    )


def result_code(result):
    """The integer code(s) of a ``RESULTS`` item (an int32 array, batched like ``result``;
    ``0`` is ``successful``): for tables, masks and Parquet columns."""
    import jax.numpy as jnp

    # equinox enumerations store the code in ``_value``; it is read here and only here
    return jnp.asarray(result._value, jnp.int32)


def result_names(result) -> list[str]:
    """The code names (e.g. ``"successful"``, ``"nonlinear_max_steps_reached"``) of a batched
    ``RESULTS`` item, one per lane, for reports and the command line."""
    import numpy as np

    # equinox enumerations keep the name of each code in ``_name_to_item``; read it here once
    by_index = {int(item._value): name for name, item in RESULTS._name_to_item.items()}
    codes = np.atleast_1d(np.asarray(result._value))
    return [by_index.get(int(c), f"code {int(c)}") for c in codes]
