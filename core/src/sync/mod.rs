//! Sync: the protocol two peers run to bring a record into step, with no I/O.
//!
//! Nothing here opens a socket or reads a clock. Each part takes messages in and gives messages
//! out, with the time passed in; the node carries the messages over libp2p and the simulator over
//! its simulated network. `docs/PROTOCOL.md` describes the protocol whole.
//!
//! - [`engine`]: every record a node holds and every session it runs, routed by peer and
//!   session id (what the simulator and `phr-node` drive).
//! - [`session`]: the per-peer session state machines, [`session::InitiatorSession`] and
//!   [`session::ResponderSession`].
//! - [`message`]: the messages, their encoding, limits and errors.
//! - [`reconcile`]: range-based set reconciliation of blob ids and ledger operation ids
//!   (negentropy): which ids only this node holds, and which only the peer holds.

pub mod engine;
pub mod message;
pub mod reconcile;
pub mod session;

pub use engine::{Ended, Engine};
pub use message::{Incoming, SyncError};
pub use session::{InitiatorSession, Local, ResponderSession, SessionStats};
