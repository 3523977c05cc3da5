"""Answers cache: exact (a canonical hash of everything that determines the answer) and semantic (a nearest
neighbour of the final user turn, served only when a per-entry threshold learned online says it is safe).

- ``keys``: the canonical key, the context fingerprint, and which requests may be cached at all.
- ``store``: entries in process memory (LRU, size and age bounds) or in Redis (shared by replicas); purges.
- ``replay``: a cached answer as a stream of canonical chunks.
- ``semantic`` / ``embed`` / ``guards``: the semantic cache (see there).

It enters the request path only through ``gateway.stages.cache``.
"""

import os

# NumPy's BLAS must run single-threaded in a worker (set before NumPy is first imported, which the semantic modules
# do): with more threads on a busy machine its spinning threads made one embedding 8x slower, not faster.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
