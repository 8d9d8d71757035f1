"""DeepFocus in JAX/Flax (Delli Veneri et al. 2022, MNRAS 518, 3407)."""
