# One image for every Introspect command and service (`introspect serve producer|scorer|gateway|aggregator`, ...).
# Build: docker build -t introspect .   (no Docker engine runs on the development machines)

FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY services ./services
COPY proto ./proto
RUN python -m venv /opt/introspect \
 && /opt/introspect/bin/pip install --no-cache-dir .

FROM python:3.11-slim
RUN useradd --uid 10001 --create-home --shell /usr/sbin/nologin introspect
COPY --from=build /opt/introspect /opt/introspect
ENV PATH=/opt/introspect/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    HF_HOME=/tmp/huggingface
USER 10001
WORKDIR /home/introspect
ENTRYPOINT ["introspect"]
CMD ["--help"]
