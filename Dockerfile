# The gateway as a container: a wheel built with maturin in a Rust+Python stage, installed into a slim runtime.
#   docker build -t ai-gateway .
#   docker run -p 4000:4000 -v $PWD/examples/demo.yaml:/etc/gateway/config.yaml ai-gateway
FROM python:3.11-slim AS build
RUN apt-get update && apt-get install -y --no-install-recommends curl build-essential ca-certificates \
    && rm -rf /var/lib/apt/lists/*
RUN curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
ENV PATH="/root/.cargo/bin:${PATH}"
RUN pip install --no-cache-dir "maturin>=1.7,<2"
WORKDIR /src
COPY Cargo.toml Cargo.lock pyproject.toml README.md ./
COPY rust ./rust
COPY python ./python
RUN maturin build --release --out /wheels

FROM python:3.11-slim
RUN useradd --create-home --uid 10001 gateway
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER gateway
WORKDIR /home/gateway
ENV GATEWAY_CONFIG=/etc/gateway/config.yaml
EXPOSE 4000
HEALTHCHECK CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:4000/healthz')"
CMD ["gateway", "serve", "--host", "0.0.0.0"]
