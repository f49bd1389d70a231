# Shared settings for the project's scripts; source it, do not run it.
source "$(dirname "${BASH_SOURCE[0]}")/target-dir.sh"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
# libtorch for tch (swarm-model), from the PyPI torch wheel, installed once outside the clone.
eval "$("$(dirname "${BASH_SOURCE[0]}")/install-libtorch" --env)"
