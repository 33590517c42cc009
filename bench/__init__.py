"""Benchmarks of semvlp: the harness, one bench_<op>.py per op, end-to-end throughput (run with python -m)."""
