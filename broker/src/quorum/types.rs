//! openraft type configuration and the serde wrappers shared by storage and the wire.

use std::io::Cursor;

use openraft::BasicNode;
use serde::{Deserialize, Serialize};

openraft::declare_raft_types!(
    pub TypeConfig:
        D = Cmd,
        R = Resp,
        NodeId = u64,
        Node = BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

pub type LogId = openraft::LogId<u64>;
pub type Vote = openraft::Vote<u64>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type StorageError = openraft::StorageError<u64>;
pub type SnapshotMeta = openraft::SnapshotMeta<u64, BasicNode>;
pub type StoredMembership = openraft::StoredMembership<u64, BasicNode>;
pub type Raft = openraft::Raft<TypeConfig>;
pub type RaftMetrics = openraft::RaftMetrics<u64, BasicNode>;

/// A replicated command. `id` lets a writer retry after an ambiguous failure (connection lost
/// after sending, leader crash) without the command reaching the Machine twice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cmd {
    pub id: Option<(u64, u64)>,
    #[serde(with = "hex")]
    pub data: Vec<u8>,
    /// The Raft term of the leader that decided this command (Kafka's controller epoch), for
    /// decisions only the active controller may take. An entry appended in a later term
    /// than this was decided by a deposed leader and is not applied. Absent from commands
    /// that any node may write, so their encoding is unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_term: Option<u64>,
}

/// Machine::apply's output for one entry (empty for blank and membership entries).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resp(#[serde(with = "hex")] pub Vec<u8>);

/// Hex instead of serde_json's default array-of-numbers: about half the size, and cheap.
pub mod hex {
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    const DIGITS: &[u8; 16] = b"0123456789abcdef";

    pub fn encode(bytes: &[u8]) -> String {
        let mut s = String::with_capacity(bytes.len() * 2);
        for b in bytes {
            s.push(DIGITS[(b >> 4) as usize] as char);
            s.push(DIGITS[(b & 15) as usize] as char);
        }
        s
    }

    pub fn decode(s: &str) -> Option<Vec<u8>> {
        fn nibble(c: u8) -> Option<u8> {
            match c {
                b'0'..=b'9' => Some(c - b'0'),
                b'a'..=b'f' => Some(c - b'a' + 10),
                b'A'..=b'F' => Some(c - b'A' + 10),
                _ => None,
            }
        }
        let s = s.as_bytes();
        if !s.len().is_multiple_of(2) {
            return None;
        }
        s.chunks_exact(2).map(|p| Some(nibble(p[0])? << 4 | nibble(p[1])?)).collect()
    }

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        decode(&s).ok_or_else(|| D::Error::custom("invalid hex"))
    }
}

/// Build an openraft storage error from anything displayable, for the write path.
pub fn io_err(e: impl std::fmt::Display) -> StorageError {
    let e = std::io::Error::other(e.to_string());
    openraft::StorageIOError::write(&e).into()
}
