//! Helpers shared by some of the agent's test binaries.

pub mod store;
