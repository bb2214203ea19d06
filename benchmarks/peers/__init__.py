"""The peers' servers for ``benchmarks/peers_run.py``: each runs in its own virtualenv and serves
``benchmarks/model.py``'s models through the Open Inference Protocol."""
