//! Sync: the protocol cores two peers run to bring a record into step, with no I/O.
//!
//! Nothing here opens a socket or reads a clock. Each part takes messages in and gives messages
//! out; the node carries them over libp2p and the simulator over its simulated network.
//!
//! - [`reconcile`]: range-based set reconciliation of blob ids and ledger operation ids
//!   (negentropy): which ids only this node holds, and which only the peer holds.

pub mod reconcile;
