# Shared settings for the project's scripts; source it, do not run it.
# Build outputs live outside the clone, keyed by toolchain version, so a fresh clone reuses them.
cache_root="${XDG_CACHE_HOME:-$HOME/.cache}/rl-swarm-operator"
rustc_key="rustc-$(rustc --version | cut -d" " -f2)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$cache_root/target-$rustc_key}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
# libtorch for tch (swarm-model), from the PyPI torch wheel, installed once outside the clone.
eval "$("$(dirname "${BASH_SOURCE[0]}")/install-libtorch" --env)"
