//! The coordinator contract and its client against a real anvil chain.
#![allow(clippy::unwrap_used)]

mod client;
mod contract;
