# The gateway as a container: non-root, read-only root filesystem friendly, a healthcheck, SIGTERM drains.
#
#   docker build -t ai-gateway .                 # compiles the Rust core in a build stage (needs a registry)
#   make image                                   # no registry: a local Debian base and a wheel built on the host
#                                                # (scripts/image.sh passes BASE=... WHEELS=dist)
#   docker run --read-only -p 4000:4000 -e OPENAI_API_KEY=... -e GATEWAY_KEY=... ai-gateway
#   docker run --read-only -p 4000:4000 -v $PWD/my.yaml:/etc/gateway/config.yaml:ro ai-gateway
#
# Config: the file named by GATEWAY_CONFIG (default /etc/gateway/config.yaml, see deploy/gateway.yaml); any
# string in it may read the environment (${VAR} / ${VAR:-default}). GATEWAY_HOST / GATEWAY_PORT / GATEWAY_WORKERS
# override the server section. Records go to /var/lib/gateway (a volume).
ARG BASE=python:3.11-slim
# build: compile the wheel in the build stage below; dist: take the wheel(s) already in ./dist
ARG WHEELS=build

FROM ${BASE} AS build
RUN apt-get update && apt-get install -y --no-install-recommends curl build-essential ca-certificates \
    && rm -rf /var/lib/apt/lists/*
RUN curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
ENV PATH="/root/.cargo/bin:${PATH}"
RUN python3 -m venv /opt/build && /opt/build/bin/pip install --no-cache-dir "maturin>=1.7,<2"
WORKDIR /src
COPY Cargo.toml Cargo.lock pyproject.toml README.md ./
COPY rust ./rust
COPY python ./python
RUN /opt/build/bin/maturin build --release --out /wheels

FROM scratch AS dist
COPY dist/*.whl /wheels/

FROM ${WHEELS} AS wheels

FROM ${BASE}
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/gateway/bin:${PATH} \
    GATEWAY_CONFIG=/etc/gateway/config.yaml \
    GATEWAY_HOST=0.0.0.0
# a CA bundle for pip behind a TLS-inspecting proxy (scripts/image.sh mounts the host's for the build only)
ARG PIP_CERT
# the dependencies first, in their own layer: a code change rebuilds only the small layer below
COPY pyproject.toml /tmp/pyproject.toml
RUN python3 -m venv /opt/gateway \
    && python3 -c "import tomllib; print('\n'.join(tomllib.load(open('/tmp/pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt \
    && /opt/gateway/bin/pip install --no-cache-dir --disable-pip-version-check -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt /tmp/pyproject.toml
COPY --from=wheels /wheels/ /tmp/wheels/
RUN /opt/gateway/bin/pip install --no-cache-dir --disable-pip-version-check --no-deps /tmp/wheels/*.whl \
    && rm -rf /tmp/wheels \
    && echo 'gateway:x:10001:10001:gateway:/var/lib/gateway:/usr/sbin/nologin' >> /etc/passwd \
    && echo 'gateway:x:10001:' >> /etc/group \
    && mkdir -p /var/lib/gateway /etc/gateway && chown 10001:10001 /var/lib/gateway
COPY deploy/gateway.yaml /etc/gateway/config.yaml
USER 10001:10001
WORKDIR /var/lib/gateway
VOLUME /var/lib/gateway
EXPOSE 4000
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('GATEWAY_PORT', '4000'), timeout=2)"]
# Granian's main process is PID 1: it handles SIGTERM/SIGINT (drain, then exit 0) and SIGHUP (reload), and
# reaps its workers.
STOPSIGNAL SIGTERM
ENTRYPOINT ["gateway"]
CMD ["serve"]
