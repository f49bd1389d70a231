//! With the `cuda` feature, force libtorch_cuda into the link of the node binary: libtorch
//! registers its CUDA backend from that library's static initialisers, which `--as-needed` would
//! drop (swarm-model's build script explains; cargo applies its link args to its own targets only).
fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    if std::env::var_os("CARGO_FEATURE_CUDA").is_some() {
        println!("cargo::rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda");
    }
}
