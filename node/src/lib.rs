//! phr-node: carries the sync protocol of `phr-core` over libp2p, and serves the control API
//! the `phr` command drives.
//!
//! - [`swarm`]: the libp2p swarm (TCP and QUIC, Noise, Yamux, identify, ping, mDNS, Kademlia,
//!   circuit relay, DCUtR, AutoNAT, connection limits, and `sync`).
//! - [`gate`]: incoming connections from peers no held record admits, bounded in all and per IP.
//! - [`codec`]: the sync protocol's wire codec, one CBOR byte string per message.
//! - [`net`]: the event loop, which owns the swarm, the sync [`Engine`] and the home, and takes
//!   commands through a [`net::Client`] handle.
//! - [`control`]: the control API on 127.0.0.1 (axum), authenticated by a token in the home.
//! - [`passphrase`]: the keystore's passphrase, through a pipe and never left in the environment.
//!
//! [`Engine`]: phr_core::sync::Engine

#![forbid(unsafe_code)]

pub mod admission;
pub mod codec;
pub mod control;
pub mod emergency;
pub mod gate;
pub mod net;
pub mod passphrase;
pub mod swarm;
