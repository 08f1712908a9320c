#!/usr/bin/env python3
"""Derives the coefficients of quarry::detail::fast_log (include/quarry/detail/fastmath.hpp).

log(1+f) = f - f^2/2 + f^3 P(f) on f in [sqrt(1/2)-1, sqrt(2)-1], with P fitted by least squares
on the relative error at Chebyshev nodes, then evaluated in float32 as the C++ code does to
report the worst relative error. Needs NumPy (Debian: python3-numpy).
"""
import numpy as np
lo, hi = np.sqrt(0.5)-1, np.sqrt(2)-1
for deg in (7, 8, 9):
    k = np.arange(4000); x = 0.5*(lo+hi) + 0.5*(hi-lo)*np.cos(np.pi*(k+0.5)/4000)
    # log(1+f) = f - f^2/2 + f^3 * P(f), fit P by weighted least squares on relative error
    y = (np.log1p(x) - x + x*x/2) / x**3
    w = x**3 / np.log1p(x)  # relative-error weights
    V = np.vander(x, deg, increasing=True)
    c = np.linalg.lstsq(V * w[:,None], y * w, rcond=None)[0]
    # evaluate in float32 exactly as the C code will (Horner, then f - f^2/2 + f^3 P)
    f = np.linspace(lo, hi, 200001).astype(np.float32)
    cf = c.astype(np.float32)
    p = np.float32(cf[-1])
    for cc in cf[-2::-1]: p = (p * f + cc).astype(np.float32)
    r = (f - np.float32(0.5)*f*f + f*f*f*p).astype(np.float32)
    err = np.max(np.abs(r.astype(np.float64) - np.log1p(f.astype(np.float64))) / np.maximum(np.abs(np.log1p(f.astype(np.float64))), 1e-30))
    print(deg, "max rel err %.3g" % err, " ".join("%.9e" % v for v in c))
