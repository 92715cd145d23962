//! Cutting off peers that break the protocol, send what cannot be read, or flood.

use super::*;

impl Node {
    /// Counts a request; cuts the peer off if it is flooding. Returns whether it was.
    pub(super) fn flooding(&mut self, peer: libp2p::PeerId) -> bool {
        let now = Self::now();
        let limit = if self.swarm.behaviour().gate.admission().is_admitted(&peer) {
            self.requests_per_window
        } else {
            self.requests_per_window
                .min(STRANGER_REQUESTS_PER_WINDOW_MAX)
        };
        let entry = self.peers.entry(peer).or_default();
        if now - entry.window_ms >= FLOOD_WINDOW_MS {
            entry.window_ms = now;
            entry.requests = 0;
        }
        entry.requests += 1;
        if entry.requests > limit {
            let why = format!(
                "it sent more than {limit} requests in {} s",
                FLOOD_WINDOW_MS / 1_000
            );
            self.cut_off(peer, &why);
            return true;
        }
        false
    }

    /// Whether the codec refused the peer's frame, unread; the peer is cut off if the frame
    /// was over the size limit or not a frame. A stranger's frame refused for its size or for
    /// the strangers' budget ([`codec::UNTIL_ADMITTED`], [`codec::BUSY`]) is not its fault: it
    /// is dropped, and the peer's request fails without a penalty.
    pub(super) fn unreadable(&mut self, peer: libp2p::PeerId, frame: &Frame) -> bool {
        if frame.0 == codec::UNTIL_ADMITTED || frame.0 == codec::BUSY {
            tracing::debug!(%peer, why = %String::from_utf8_lossy(&frame.0[1..]), "a stranger's frame refused");
            return true;
        }
        let why = if frame.0 == codec::OVERSIZED {
            format!("it sent a frame over {} bytes", codec::FRAME_BYTES_MAX)
        } else if frame.0 == codec::NOT_A_FRAME {
            "it sent something that is not a sync frame".to_string()
        } else {
            return false;
        };
        self.cut_off(peer, &why);
        true
    }

    pub(super) fn cut_off(&mut self, peer: libp2p::PeerId, why: &str) {
        tracing::warn!(%peer, why, "disconnecting a peer that broke the sync protocol");
        let entry = self.peers.entry(peer).or_default();
        entry.blocked_until_ms = Self::now() + BLOCK_MS;
        entry.last_error = Some(format!("cut off: {why}"));
        let _ = self.swarm.disconnect_peer_id(peer);
        if let Some(phr_peer) = from_libp2p(&peer) {
            for run in self.runs.values_mut() {
                if let Some(p) = run.peers.get_mut(&phr_peer)
                    && matches!(p.state, RunState::Dialing | RunState::Syncing)
                {
                    p.state = RunState::Failed(format!("cut off: {why}"));
                }
            }
        }
    }
}
