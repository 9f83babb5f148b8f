# petavox: one image for the Ray head and the Ray workers (KubeRay, the Ray cluster launcher,
# deploy/docker-compose.yml). CPU by default; a CUDA base installs onnxruntime-gpu instead:
#
#   docker build -t petavox:0.1.0-ray2.60.0 .
#   docker build --build-arg BASE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04 \
#     -t petavox:0.1.0-ray2.60.0-gpu .
#
# The tag is <petavox version>-ray<RAY_VERSION>; deploy/ uses the same Ray version everywhere
# (tests/deploy check them against RAY_VERSION). onnxruntime-gpu 1.26 is built for CUDA 12 and
# cuDNN 9, as the CUDA base above. The image holds no credentials: they come from the
# environment at run time (workload identity, IRSA, or AWS_* variables for MinIO).

ARG BASE=python:3.11.13-slim-bookworm

FROM ${BASE} AS builder
ARG RAY_VERSION=2.60.0
ARG ONNXRUNTIME_VERSION=1.26.0
# NVIDIA's CUDA images carry no Python: take the distribution's (its version follows the base,
# so it is not pinned: DL3008).
# hadolint ignore=DL3008
RUN if ! command -v python3 >/dev/null; then \
      apt-get update \
      && apt-get install -y --no-install-recommends python3 python3-venv \
      && rm -rf /var/lib/apt/lists/*; \
    fi \
    && python3 -m venv /opt/petavox
WORKDIR /src
COPY pyproject.toml README.md ./
COPY deploy/image_requirements.py deploy/
# Dependencies first (this layer is reused while pyproject.toml is unchanged), wheels only: the
# image never compiles. NVIDIA's images set CUDA_VERSION, which selects onnxruntime-gpu.
RUN if [ -n "${CUDA_VERSION:-}" ]; then ort=onnxruntime-gpu; else ort=onnxruntime; fi \
    && /opt/petavox/bin/python deploy/image_requirements.py pyproject.toml \
      "ray[default]==${RAY_VERSION}" "${ort}==${ONNXRUNTIME_VERSION}" > requirements.txt \
    && /opt/petavox/bin/pip install --no-cache-dir --only-binary=:all: -r requirements.txt
COPY tasks tasks
COPY workflows workflows
RUN /opt/petavox/bin/pip install --no-cache-dir --no-deps .

FROM ${BASE}
# wget: KubeRay's liveness and readiness probes; rsync and openssh-client: the Ray cluster
# launcher copies its config into the head's container and reaches workers over SSH. Packages
# are not pinned (DL3008): they follow the pinned base's security updates. The PATH line is
# written unexpanded on purpose (SC2016): it expands in each login shell.
# hadolint ignore=DL3008,SC2016
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates openssh-client rsync wget \
    && if ! command -v python3 >/dev/null; then \
      apt-get install -y --no-install-recommends python3; \
    fi \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 10001 petavox \
    && useradd --uid 10001 --gid 10001 --create-home --shell /bin/bash petavox \
    && echo 'export PATH="/opt/petavox/bin:$PATH"' > /etc/profile.d/petavox.sh
COPY --from=builder /opt/petavox /opt/petavox
# Login shells (KubeRay's `bash -lc`, the cluster launcher's `bash --login`) reset PATH from
# /etc/profile; the profile.d line above puts the virtualenv back in front.
ENV PATH=/opt/petavox/bin:$PATH \
    VIRTUAL_ENV=/opt/petavox \
    HOME=/home/petavox \
    PYTHONUNBUFFERED=1
USER 10001:10001
WORKDIR /home/petavox
# KubeRay and the cluster launcher replace the command with their own `ray start`; compose
# sets `entrypoint: ray`.
ENTRYPOINT ["petavox"]
CMD ["--help"]
