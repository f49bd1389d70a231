//! With the `cuda` feature, force libtorch_cuda into the link.
//!
//! Nothing in our code or in tch references a symbol of libtorch_cuda: libtorch registers its CUDA
//! backend from that library's static initialisers. Rust links with `--as-needed`, which drops an
//! unreferenced library, and then `tch::Cuda::is_available()` is false on a GPU host. Cargo applies
//! `rustc-link-arg` only to this package's own tests, examples and binaries, so a binary crate
//! that depends on swarm-model with `cuda` must emit the same line from its own build script.
fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    if std::env::var_os("CARGO_FEATURE_CUDA").is_some() {
        println!("cargo::rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda");
    }
}
