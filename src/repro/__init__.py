"""Reproduction pipeline for LongLoRA (Chen et al., 2024) and SimCSE (Gao et al., 2021)."""

__version__ = "0.1.0"
