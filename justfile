# Introspect: common tasks. `just --list` shows them.

# the project virtual environment when there is one, else the Python on the PATH
python := if path_exists(".venv/bin/python") == "true" { ".venv/bin/python" } else { "python3" }

# create .venv and install the project with its development tools
setup:
    test -x {{python}} || python3 -m venv .venv
    {{python}} -m pip install --quiet --upgrade pip
    {{python}} -m pip install --quiet -e '.[dev]'

# run every test, with line coverage of the protocol core
test *ARGS:
    {{python}} -m pytest --cov=services.core --cov-report=term-missing:skip-covered --cov-fail-under=90 {{ARGS}}

# ruff: lint and formatting check
lint:
    {{python}} -m ruff check .
    {{python}} -m ruff format --check .

# a small experiment on the shipped fixture data, answered by the deterministic stand-in
demo:
    {{python}} -m services.cli evaluate --dataset IMDB --split test --task counterfactual --mirror tests/fixtures/datasets --out results/demo
