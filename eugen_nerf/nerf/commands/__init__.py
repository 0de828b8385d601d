"""The `eugen train`, `eugen render time-sweep` and `eugen distill` commands."""
