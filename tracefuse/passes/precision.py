"""Precision passes: `fp16` (float16 weights and compute with float32 islands for norms and softmax)."""

from __future__ import annotations
