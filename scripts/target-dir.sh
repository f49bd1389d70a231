# The cargo target dir of this clone; source it, do not run it.
# Build outputs live outside the clone, keyed by toolchain version and by the clone's path, so a
# fresh clone at the same place reuses them. The path is part of the key because cargo reuses a
# test binary built in another clone (its fingerprints are relative to the workspace) while the
# binary keeps the other clone's env!("CARGO_MANIFEST_DIR") and reads fixtures from there.
cache_root="${XDG_CACHE_HOME:-$HOME/.cache}/rl-swarm-operator"
rustc_key="rustc-$(rustc --version | cut -d" " -f2)"
clone_key="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P | sha256sum | cut -c1-12)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$cache_root/target-$rustc_key-$clone_key}"
