# somocloud image: the CLI plus Dask, for the Kubernetes jobs and Dask workers.
#   docker build -t somocloud:cpu .                                   (CPU torch)
#   docker build --build-arg TORCH_SPEC="torch>=2.3,<3" -t somocloud:cuda .   (CUDA torch wheels from PyPI)
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
FROM ${PYTHON_IMAGE}

ARG TORCH_SPEC="torch==2.13.0"
ARG TORCH_INDEX="https://download.pytorch.org/whl/cpu"
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1

RUN useradd --create-home --uid 10001 somo
WORKDIR /opt/somocloud
COPY pyproject.toml README.md constraints.txt ./
COPY somocloud ./somocloud
RUN pip install --extra-index-url "${TORCH_INDEX}" "${TORCH_SPEC}" && pip install ".[k8s]"

USER somo
WORKDIR /home/somo
ENTRYPOINT ["somocloud"]
CMD ["--help"]
