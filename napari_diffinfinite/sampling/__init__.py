"""Sampling over a canvas: random-patch diffusion, seamless decoding, seam metrics (pure torch + numpy)."""
