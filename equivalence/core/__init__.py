"""The core: specs, the float64 reference, the error model, the per-layer comparison, known differences.

Imports numpy (and hypothesis, for ``strategies`` only) and no framework: everything here talks numpy and the
canonical weight layout ``W (in, out)``.
"""
