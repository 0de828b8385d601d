"""Benchmarks: dense against EUGen, measured side by side in one run."""
