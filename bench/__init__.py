"""Benchmarks of llamactl against a bare Starlette/uvicorn baseline (``python -m bench.roundtrip``)."""
