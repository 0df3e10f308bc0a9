"""Benchmarks of a model across runtimes: size, latency, throughput, memory (``qdm bench``).

- ``latency``: timing calls (percentiles, throughput) and the machine's measured fp32 peak
- ``memory``: peak resident memory of a fresh process that loads a model and runs it
- ``runner``: what is measured for each runtime, and ``run_bench`` that measures it all
- ``report``: bench.json, a Markdown table and a plot

Nothing heavy is imported here: ``python -m quickdraw_mobile.bench.memory`` must start light.
"""
