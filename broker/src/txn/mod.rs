//! Transactions: the transaction coordinator's state machine (`coordinator.rs`), its
//! records in `__transaction_state` (`records.rs`, Kafka's TransactionLog key and value),
//! and the writer that sends COMMIT and ABORT markers to partition leaders (`markers.rs`).
//! The partitions' side (markers, the last stable offset, aborted transactions) is in
//! `partition.rs` and `producer_state.rs`.

pub mod coordinator;
pub mod markers;
pub mod peers;
pub mod records;

/// The internal topic of transaction state.
pub const TRANSACTION_TOPIC: &str = "__transaction_state";

/// The transaction protocol a request belongs to (KIP-890). Version 2 (EndTxn v5,
/// Produce v12, TxnOffsetCommit v5) bumps the epoch at every EndTxn and adds partitions
/// when a transactional Produce or TxnOffsetCommit first reaches them; version 1 clients
/// add them with AddPartitionsToTxn and AddOffsetsToTxn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnVersion {
    V1,
    V2,
}
