"""Side-by-side benchmarks (``python -m bench`` from the repository root)."""
