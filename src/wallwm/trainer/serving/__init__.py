"""Serving trained checkpoints: wire protocol, batched engine, HTTP server and light client.

Data flows ``client -> server -> engine -> model``; :mod:`wallwm.trainer.policy` follows plans
over either the engine in-process or a client of a server, so both paths behave alike. The
server runs in one process or as Ray Serve replicas.
"""
