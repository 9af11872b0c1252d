"""Calibration and held-out image sets: declared sources → seeded samples → model inputs."""
