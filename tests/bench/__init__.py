"""Tests of the benchmark harness: no timings, only the code around them."""
