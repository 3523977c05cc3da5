"""Client dialects: the formats callers speak (OpenAI, Anthropic), each translated at the edge to the canonical
types in ``gateway.types`` and back. A dialect provides ``parse_chat``, ``render_response``, ``error_body`` and a
``stream`` renderer class (``chunk``, ``end``, ``error``)."""
