# somocloud image: the CLI plus Dask, for the Kubernetes jobs and the Dask workers. Runs as a non-root user.
#   docker build -t somocloud:cpu .                              (torch's CPU wheel: small, no GPU)
#   docker build --build-arg VARIANT=cuda -t somocloud:cuda .    (torch from PyPI with its CUDA libraries;
#                                                                 run with the NVIDIA container runtime)
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
FROM ${PYTHON_IMAGE}

ARG VARIANT=cpu
ARG TORCH_VERSION=2.13.0
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1

RUN useradd --create-home --uid 10001 somo
WORKDIR /opt/somocloud
COPY pyproject.toml README.md constraints.txt ./
COPY somocloud ./somocloud
RUN set -eu; \
    case "${VARIANT}" in \
      cpu) pip install --index-url https://download.pytorch.org/whl/cpu "torch==${TORCH_VERSION}" ;; \
      cuda) pip install "torch==${TORCH_VERSION}" ;; \
      *) echo "VARIANT must be cpu or cuda, not '${VARIANT}'" >&2; exit 2 ;; \
    esac; \
    pip install ".[k8s]"; \
    somocloud --version

USER somo
WORKDIR /home/somo
ENTRYPOINT ["somocloud"]
CMD ["--help"]
