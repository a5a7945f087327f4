"""What every layer uses and nothing of skinfeat's own: errors, user paths and
cache folders, the seven classes, atomic writes and writability checks, the
TensorFlow runtime, devices, progress bars, metrics and JSON helpers."""
