"""Converters from other gateways' configs to this gateway's YAML (``gateway import ...``)."""
