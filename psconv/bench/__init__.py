"""Benchmarks behind ``psconv bench``: each prints a table and writes CSV, JSON and a PNG plot."""
