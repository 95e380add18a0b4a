# syntax=docker/dockerfile:1
# Multi-stage: dependencies are installed in a builder, the runtime image gets the virtualenv
# and a non-root user. BASE_IMAGE can be overridden (tests build from a locally made base).
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
RUN python3 -m venv /opt/venv
COPY requirements.txt ./
RUN /opt/venv/bin/pip install -r requirements.txt
COPY pyproject.toml README.md ./
COPY config ./config
COPY src ./src
RUN /opt/venv/bin/pip install --no-deps .

FROM ${BASE_IMAGE}
RUN useradd --create-home --uid 10001 pipeline
COPY --from=builder /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PIPELINE_STORE=/data/store PYTHONDONTWRITEBYTECODE=1
WORKDIR /data
RUN chown pipeline /data
USER pipeline
ENTRYPOINT ["pipeline"]
CMD ["--help"]
