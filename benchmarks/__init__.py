"""Measuring scripts of tfdeeplab (run as `python -m benchmarks.<name>`)."""
