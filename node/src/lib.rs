//! phr-node: carries the sync protocol of `phr-core` over libp2p.
//!
//! - [`net`]: the libp2p swarm (TCP, Noise, Yamux, identify, ping, request-response with CBOR)
//!   and the node's event loop, which owns the swarm and the sync [`Engine`] and takes commands
//!   through a [`net::Client`] handle.
//!
//! [`Engine`]: phr_core::sync::Engine

#![forbid(unsafe_code)]

pub mod codec;
pub mod control;
pub mod net;
pub mod swarm;
