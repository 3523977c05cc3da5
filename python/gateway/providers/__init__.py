"""Provider adapters, one module per wire format; ``make_provider`` picks one by the deployment's ``provider``."""

from __future__ import annotations

from importlib import import_module

from gateway.config import Deployment
from gateway.http import HttpClient
from gateway.providers.base import Provider

# provider name -> (module, class); imported lazily so an unused adapter costs nothing at start-up.
ADAPTERS: dict[str, tuple[str, str]] = {
    "openai": ("gateway.providers.openai", "OpenAIProvider"),
    "azure": ("gateway.providers.openai", "OpenAIProvider"),
    "anthropic": ("gateway.providers.anthropic", "AnthropicProvider"),
    "gemini": ("gateway.providers.gemini", "GeminiProvider"),
    "bedrock": ("gateway.providers.bedrock", "BedrockProvider"),
}


def make_provider(dep: Deployment, http: HttpClient) -> Provider:
    module, cls = ADAPTERS[dep.provider]
    return getattr(import_module(module), cls)(dep, http)
