"""Rebuild python/gateway/data/prices.json from the community price list (USD per million tokens).

Usage: python scripts/update_prices.py [../shared/corpora/litellm-model-prices/model_prices_and_context_window.json]
Keeps chat/embedding models only and the fields the gateway reads, so the shipped table stays small.
"""

import json
import sys
from pathlib import Path

SRC = Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/corpora/litellm-model-prices/model_prices_and_context_window.json")
OUT = Path(__file__).resolve().parent.parent / "python/gateway/data/prices.json"


def per_mtok(v: object) -> float | None:
    return round(float(v) * 1e6, 6) if isinstance(v, int | float) else None


def main() -> None:
    src = json.loads(SRC.read_text())
    out = {}
    for name, e in sorted(src.items()):
        if name == "sample_spec" or e.get("mode") not in ("chat", "embedding", "completion", "responses"):
            continue
        row = {
            "input": per_mtok(e.get("input_cost_per_token")),
            "output": per_mtok(e.get("output_cost_per_token")),
            "cached_input": per_mtok(e.get("cache_read_input_token_cost")),
            "cache_creation": per_mtok(e.get("cache_creation_input_token_cost")),
            "context_window": e.get("max_input_tokens"),
            "max_output": e.get("max_output_tokens"),
            "provider": e.get("litellm_provider"),
        }
        if row["input"] is None and row["output"] is None:
            continue
        out[name] = {k: v for k, v in row.items() if v is not None}
    OUT.write_text(json.dumps(out, separators=(",", ":"), sort_keys=True))
    print(f"{len(out)} models -> {OUT} ({OUT.stat().st_size // 1024} KiB)")


if __name__ == "__main__":
    main()
