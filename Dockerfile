# ssm_jax in a container: the CPU image by default, the CUDA image with one build-arg.
#
#   docker build -t ssm-jax .                                   # CPU (python:3.11-slim)
#   docker build --build-arg JAX_EXTRA=cuda12 -t ssm-jax:cuda . # + jax's CUDA 12 wheels (run with --gpus all)
#   docker run --rm ssm-jax                                     # the flagship's smoke preset
#   docker run --rm -v "$PWD/runs:/home/ssm/ssm_jax/runs" ssm-jax python -m experiments.halfcheetah_vel
#
# The install is README command 1's, with the same constraints file (tests/test_docker.py checks it).
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

ARG JAX_EXTRA=""
ENV PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MPLBACKEND=Agg

# The work directory is made here, owned by ssm: WORKDIR would create it owned by root.
RUN useradd --create-home --uid 1000 ssm && install -d -o ssm -g ssm /home/ssm/ssm_jax
USER ssm
WORKDIR /home/ssm/ssm_jax
COPY --chown=ssm:ssm . .

RUN python3 -m venv .venv && . .venv/bin/activate && pip install -e . -c constraints.txt \
    && if [ -n "$JAX_EXTRA" ]; then pip install "jax[$JAX_EXTRA]" -c constraints.txt; fi

ENV PATH="/home/ssm/ssm_jax/.venv/bin:${PATH}"
CMD ["python", "-m", "experiments.halfcheetah_vel", "--preset", "smoke"]
