"""Fixed Numba kernels, compiled once per machine (``cache=True``) and never per model.

A leaf package: it imports only NumPy, Numba and ``math``, so the rest of symgrad can use
it without cycles and its compiled code never depends on a user's expression.
"""
