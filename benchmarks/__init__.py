"""Performance benchmarks (run by hand or `make bench`; not part of the test suite).

Each benchmark is a module with a `main(argv)` entry point, run from the repository root as
`python -m benchmarks.<name>`; see benchmarks/README.md. `attention_methods` is not a benchmark of its
own: it holds the methods and synthetic setup `attention_extraction` measures.
"""
