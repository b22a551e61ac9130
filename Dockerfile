# One image for every Introspect command and service (`introspect serve producer|scorer|gateway|aggregator`, ...).
# Build: `just image` (docker build); no Docker engine runs on the development machines.

# Build stage: install the project and its dependencies into a virtual environment.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY services ./services
COPY proto ./proto
RUN python -m venv /opt/introspect \
 && /opt/introspect/bin/pip install --no-cache-dir . \
 && /opt/introspect/bin/pip uninstall --yes pip

# Final stage: the environment alone, no build tools, no pip, no caches; a non-root user.
FROM python:3.11-slim
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
