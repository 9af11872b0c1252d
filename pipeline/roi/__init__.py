"""Regions of interest as each model's own pipeline crops them: conventions, geometry, warps, detectors."""
