"""qnr's result codes: :class:`RESULTS` extends ``optimistix.RESULTS`` with qnr's own failures.

Every solver returns a ``result`` field of this enumeration; ``RESULTS.successful`` is the only
success. Under ``vmap`` the failed lanes carry their code and NaN outputs.
"""

from __future__ import annotations

import optimistix as optx

__all__ = ["RESULTS"]


class RESULTS(optx.RESULTS):  # pyright: ignore[reportGeneralTypeIssues]
    """``optimistix.RESULTS`` plus qnr's codes."""

    invariant_violated = (
        "The solution violates an invariant of its problem (E >= 0, 0 <= rank <= "
        "min(1, kappa), or its residual exceeds the tolerance); it is not returned."
    )
