//! On-disk storage: record batches, segments with their indexes, and the partition log.

pub mod batch;
pub mod cleaner;
pub mod control;
pub mod disk;
pub mod index;
pub mod log;
pub mod offset_map;
pub mod records;
pub mod segment;
pub mod segments;
pub mod snapshot;
pub mod txn_index;
