"""blazerpc benchmark harness: raw baseline server, closed-loop load generator, runner.

Every module is also a script (``python benchmarks/<module>.py --help``).
"""
