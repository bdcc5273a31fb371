"""Spectral tools: free convolutions with a semicircle, Stieltjes/Hilbert transforms,
supports and edge-aware quadrature (THEORY.md section 2)."""
