"""Tooling for the tests and benchmarks, not shipped with the package: a headless
Chromium driven over the DevTools pipe (``chromium``) and synthetic features
(``synthetic``)."""
