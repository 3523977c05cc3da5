"""Benchmark-validated routing: task suites, metrics, ``gateway bench``, its report and routing table, request
categories, and the quality estimates the ``quality`` strategy routes by.

Enters the request path only through the router's ``quality`` strategy (``table.py``) and the category hook
(``category.py``); everything else runs off it (``gateway bench``, the feedback writer)."""
