"""cytask.compiler: the compile stage (Numba, then Cython, then Python)."""
