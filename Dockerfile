# One image for every Introspect command and service (`introspect serve producer|scorer|gateway|aggregator`, ...).
# Build: `just image` (Docker when an engine answers, else Podman); `just test-image` builds it on a
# base made from Debian's packages and runs it (tests/support/image.py).

# The base of both stages: any image with Python 3.11+ as `python3` (Debian bookworm's has 3.11).
ARG BASE=python:3.11-slim

# Build stage: install the project and its dependencies into a virtual environment.
FROM ${BASE} AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY services ./services
COPY proto ./proto
# Then out of it what never runs (README, "The image"): pip and setuptools, the libraries' own test
# suites (141 MB, pandas' alone 46 MB), the Kubernetes client's asyncio copy (68 MB; discovery uses the
# synchronous one) and Arrow's C++ headers. The .pyc stay: without them, with a read-only root, every
# process would compile its imports at every start (a service's imports: 7 s with them, 17 s without).
RUN python3 -m venv /opt/introspect \
 && /opt/introspect/bin/pip install --no-cache-dir . \
 && /opt/introspect/bin/pip uninstall --yes pip setuptools \
 && cd /opt/introspect/lib/python3*/site-packages \
 && find . -depth -type d -name tests -exec rm -rf {} + \
 && rm -rf kubernetes/aio pyarrow/include

# Final stage: the environment alone, no build tools, no pip, no caches; a non-root user.
FROM ${BASE}
RUN useradd --uid 10001 --user-group --create-home --shell /usr/sbin/nologin introspect
COPY --from=build /opt/introspect /opt/introspect
ENV PATH=/opt/introspect/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HF_HOME=/tmp/huggingface
USER 10001:10001
WORKDIR /home/introspect
EXPOSE 9090
ENTRYPOINT ["introspect"]
CMD ["--help"]
