//! Consumer groups, classic protocol: the group coordinator's state machine
//! (`coordinator.rs`) and the committed offsets it stores in `__consumer_offsets`
//! (`offsets_store.rs` reads and writes the log, `offsets.rs` is the record format).

pub mod coordinator;
pub mod offsets;
pub mod offsets_store;
pub mod status;

/// The internal topic of committed offsets.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";
