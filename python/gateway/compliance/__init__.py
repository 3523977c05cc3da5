"""The compliance engine: policy profiles, prompt-injection filtering, output content filtering.

``profiles`` resolves which profile governs a request; ``injection`` and ``output`` make the decisions with the
Rust core's scanners (``models`` loads them with their shipped weights); ``admin`` is the run-time API. The
request path enters through one thin stage, ``gateway.stages.compliance``.
"""
