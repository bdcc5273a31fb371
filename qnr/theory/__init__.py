"""Replica / state-evolution theory: ERM fixed points, thresholds, Bayes-optimal error and
gradient-flow dynamics (THEORY.md sections 2-5)."""

from qnr.theory.bayes import *  # noqa: E402, F401, F403 (public API: its __all__)
from qnr.theory.design import *  # noqa: E402, F401, F403 (public API: its __all__)
from qnr.theory.dynamics import *  # noqa: E402, F401, F403 (public API: its __all__)
from qnr.theory.erm import *  # noqa: E402, F401, F403 (public API: its __all__)
from qnr.theory.thresholds import *  # noqa: E402, F401, F403 (public API: its __all__)
