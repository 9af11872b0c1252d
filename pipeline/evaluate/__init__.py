"""Evaluation: output decoders (registry-driven) and int8-vs-float drift."""
