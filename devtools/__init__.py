"""Tooling for the tests and benchmarks, not shipped with the package: a headless
Chromium driven by selenium (``chromium``)."""
