# The pipeline run-stage image: CPU torch, a non-root user, `pipeline serve` by default.
#
#   make docker-build      builds it from a release in the local store (docker/build.py)
#   docker build .         also works on a machine that can reach PyPI and download.pytorch.org
#
# A release is either baked in (docker/release/ staged by docker/build.py, RELEASE names it) or
# pulled from a store mounted at /data/store at start: `-v STORE:/data/store -e PIPELINE_RELEASE=`.
ARG BASE_IMAGE=python:3.11-slim

# --- deps: a virtualenv with the pinned dependencies (rebuilt only when requirements.txt changes)
FROM ${BASE_IMAGE} AS deps
# docker/wheels/ is a wheelhouse that docker/build.py fills from the host's pip (then the build
# needs no network: PIP_NO_INDEX=1); when it is empty pip uses the indexes, and the PyTorch CPU
# index makes torch==2.13.0 resolve to its CPU build (`+cpu` sorts above the CUDA one on PyPI).
ARG PIP_NO_INDEX=0
ARG PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_FIND_LINKS=/wheels
RUN python3 -m venv /opt/venv
COPY requirements.txt /src/
# The wheels are bind-mounted, not copied: they never become a layer. Then what inference never
# loads goes: C++ headers, test suites and test binaries (about 250 MB).
RUN --mount=type=bind,source=docker/wheels,target=/wheels \
    /opt/venv/bin/pip install --quiet --requirement /src/requirements.txt \
 && site="$(/opt/venv/bin/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')" \
 && rm -rf "$site"/torch/include "$site"/torch/test "$site"/pyarrow/include "$site"/pandas/tests \
 && find "$site"/torch/bin -type f ! -name torch_shm_manager -delete \
 && find "$site"/numpy "$site"/pyarrow -depth -type d -name tests -exec rm -rf {} +

# --- app: the pipeline package as a wheel (hatchling comes from the wheelhouse when offline) ---
FROM deps AS app
# A build argument lives in one stage: declare it again, or this stage would go online.
ARG PIP_NO_INDEX=0
COPY pyproject.toml README.md /src/
COPY src /src/src
RUN --mount=type=bind,source=docker/wheels,target=/wheels \
    /opt/venv/bin/pip wheel --quiet --no-deps --wheel-dir /dist /src

# --- runtime: the virtualenv, the package, a non-root user, and optionally one baked release ---
FROM ${BASE_IMAGE}
RUN useradd --create-home --uid 10001 --user-group --shell /usr/sbin/nologin pipeline \
 && mkdir -p /data/store && chown pipeline:pipeline /data /data/store
# Separate layers: the ~1 GB of dependencies stays cached while the code changes. The wheel is
# copied, not mounted from the stage: a COPY's cache key covers its content, a mount's may not.
COPY --from=deps /opt/venv /opt/venv
COPY --from=app /dist/ /tmp/dist/
RUN /opt/venv/bin/pip install --quiet --no-index --no-deps --disable-pip-version-check \
        /tmp/dist/pipeline-*.whl \
 && rm -rf /tmp/dist
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIPELINE_STORE=/data/store \
    PIPELINE_LOG_FORMAT=json \
    PORT=8080
WORKDIR /data
EXPOSE 8080
# exec-form ENTRYPOINT: pipeline is PID 1 and receives SIGTERM from `docker stop` itself.
ENTRYPOINT ["pipeline"]
CMD ["serve"]
# No curl in the image: the virtualenv's Python asks /healthz.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; e = os.environ; u.urlopen('http://127.0.0.1:%s/healthz' % e.get('PIPELINE_SERVE__PORT', e.get('PORT', '8080')), timeout=4)"]

# Last, so a new release rebuilds only these layers. The baked store is root-owned: a release
# is immutable, and the process cannot change it (new builds or releases go beside it).
COPY docker/release/ /data/store/
ARG RELEASE=""
ARG MODEL_NAME=""
ARG MODEL_VERSION=""
ARG PACKAGE_ID=""
ARG BUILD_ID=""
ARG PIPELINE_VERSION=""
ARG VCS_REF=""
ARG CREATED=""
LABEL org.opencontainers.image.title="pipeline ${MODEL_NAME}" \
      org.opencontainers.image.description="pipeline run stage (serve, predict) for ${RELEASE}" \
      org.opencontainers.image.version="${MODEL_VERSION}" \
      org.opencontainers.image.revision="${VCS_REF}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      io.pipeline.release="${RELEASE}" \
      io.pipeline.package-id="${PACKAGE_ID}" \
      io.pipeline.build-id="${BUILD_ID}" \
      io.pipeline.version="${PIPELINE_VERSION}"
ENV PIPELINE_RELEASE=${RELEASE}
# Numeric, so that Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 10001:10001
