"""Replica / state-evolution theory: ERM fixed points, thresholds, Bayes-optimal error and
gradient-flow dynamics (THEORY.md sections 2-5)."""
