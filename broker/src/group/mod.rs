//! Consumer groups, classic protocol: the group coordinator's state machine and the
//! committed offsets it stores in `__consumer_offsets`.

pub mod coordinator;
pub mod offsets;
pub mod status;
