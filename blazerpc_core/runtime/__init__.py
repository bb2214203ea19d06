"""Running model functions: the executor, batching policies and batchers."""
