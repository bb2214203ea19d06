"""Schema evolution: the lock file, the compatibility check, and field numbers kept while serving."""
