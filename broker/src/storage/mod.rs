//! On-disk storage: record batches, segments with their indexes, and the partition log.

pub mod batch;
pub mod index;
pub mod log;
pub mod segment;
