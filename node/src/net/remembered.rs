//! The addresses a node keeps across restarts, so that it finds its peers again however they
//! moved: `HOME/peers.json` ([`PEERS_FILE`]), a snapshot of every remembered peer's addresses,
//! and `HOME/peers.log` ([`PEERS_JOURNAL_FILE`]), a journal of the addresses remembered since,
//! one JSON line each (`{"peer":"12D3Koo…","addr":"/ip4/…/tcp/…"}`).
//!
//! A new address costs one appended line and one fsync, not a rewrite of the snapshot: a
//! practice's node with 10,000 patients' devices would otherwise rewrite megabytes for every
//! address it learns. Opening reads the snapshot, then the journal, writes the merged snapshot
//! atomically and empties the journal; so does a batch that would take the journal past
//! [`PEERS_JOURNAL_BYTES_MAX`]. A crash between the two leaves lines in the journal that the
//! snapshot holds already, and the next opening merges them again to the same result.
//!
//! Neither file is needed to run: a missing one is empty, a damaged snapshot is ignored with a
//! warning (as it always was), and so is a damaged line of the journal, the usual one being a
//! last line torn by a crash. A failed write is logged, and the node runs on with what it holds
//! in memory.

use std::{
    fs::{File, OpenOptions},
    io::{self, Read, Write},
    path::{Path, PathBuf},
};

use phr_core::{
    home::{PEERS_FILE, PEERS_JOURNAL_FILE},
    owner_only,
};
use serde::{Deserialize, Serialize};

use super::*;

/// Bytes the journal holds at most: a batch of addresses that would take it past this is written
/// into the snapshot instead, and the journal emptied. About 10,000 lines, each an address
/// learnt since the last start; the snapshot is rewritten once for them, not once for each.
pub const PEERS_JOURNAL_BYTES_MAX: u64 = 1024 * 1024;

/// One line of the journal: an address remembered for a peer (without `/p2p/<peer>`).
#[derive(Debug, Serialize, Deserialize)]
struct Line {
    peer: String,
    addr: String,
}

/// The addresses remembered per peer, and the two files that keep them.
#[derive(Debug)]
pub(super) struct Remembered {
    snapshot: PathBuf,
    journal: PathBuf,
    peers: BTreeMap<libp2p::PeerId, Vec<Multiaddr>>,
    /// Bytes in the journal now.
    journal_bytes: u64,
}

impl Remembered {
    /// Reads what the home `dir` remembers: the snapshot, then the journal, merged into a new
    /// snapshot if the journal held anything. Keeps [`ADDRS_PER_PEER_MAX`] addresses per peer,
    /// every peer `admitted` says a ledger admits, and [`PEERS_MAX`] others.
    pub(super) fn open(dir: &Path, admitted: &dyn Fn(&libp2p::PeerId) -> bool) -> Remembered {
        let mut remembered = Remembered {
            snapshot: dir.join(PEERS_FILE),
            journal: dir.join(PEERS_JOURNAL_FILE),
            peers: BTreeMap::new(),
            journal_bytes: 0,
        };
        let snapshot = read_snapshot(&remembered.snapshot);
        let (journal, journal_bytes) = read_journal(&remembered.journal);
        let all = snapshot
            .into_iter()
            .flat_map(|(peer, addrs)| addrs.into_iter().map(move |addr| (peer, addr)))
            .chain(journal);
        let mut others = 0;
        for (peer, addr) in all {
            if !remembered.peers.contains_key(&peer) && !admitted(&peer) {
                if others >= PEERS_MAX {
                    continue;
                }
                others += 1;
            }
            remembered.insert(peer, addr);
        }
        remembered.journal_bytes = journal_bytes;
        if journal_bytes > 0
            && let Err(error) = remembered.compact()
        {
            tracing::warn!(%error, "cannot merge the journal of peers' addresses into peers.json");
        }
        remembered
    }

    /// Every remembered peer with its addresses.
    pub(super) fn peers(&self) -> &BTreeMap<libp2p::PeerId, Vec<Multiaddr>> {
        &self.peers
    }

    /// The addresses remembered for `peer`.
    pub(super) fn addrs(&self, peer: &libp2p::PeerId) -> &[Multiaddr] {
        self.peers.get(peer).map_or(&[], Vec::as_slice)
    }

    /// Remembers each address not remembered yet that there is room for (the bounds of
    /// [`Remembered::open`]), and writes the new ones down: appended to the journal with one
    /// fsync for all, or into the snapshot if there is none yet or the journal would pass
    /// [`PEERS_JOURNAL_BYTES_MAX`]. Returns how many were new.
    pub(super) fn remember(
        &mut self,
        addrs: impl IntoIterator<Item = (libp2p::PeerId, Multiaddr)>,
        admitted: &dyn Fn(&libp2p::PeerId) -> bool,
    ) -> usize {
        let mut lines = Vec::new();
        for (peer, addr) in addrs {
            let new_peer = !self.peers.contains_key(&peer);
            if new_peer && !admitted(&peer) && self.others(admitted) >= PEERS_MAX {
                continue;
            }
            if self.insert(peer, addr.clone()) {
                let line = Line {
                    peer: peer.to_string(),
                    addr: addr.to_string(),
                };
                serde_json::to_writer(&mut lines, &line).expect("two strings serialise");
                lines.push(b'\n');
            }
        }
        let new = lines.iter().filter(|b| **b == b'\n').count();
        if new == 0 {
            return 0;
        }
        let room = self.journal_bytes + lines.len() as u64 <= PEERS_JOURNAL_BYTES_MAX;
        let written = if room && self.snapshot.exists() {
            self.append(&lines).or_else(|error| {
                // A failed append may have left part of a line: the snapshot takes everything.
                tracing::warn!(%error, "cannot append to the journal of peers' addresses");
                self.compact()
            })
        } else {
            self.compact()
        };
        if let Err(error) = written {
            tracing::warn!(%error, "cannot save peers' addresses");
        }
        new
    }

    /// Adds `addr` for `peer` if it is new and the peer has room; returns whether it was added.
    fn insert(&mut self, peer: libp2p::PeerId, addr: Multiaddr) -> bool {
        let addrs = self.peers.entry(peer).or_default();
        let added = !addrs.contains(&addr) && addrs.len() < ADDRS_PER_PEER_MAX;
        if added {
            addrs.push(addr);
        }
        if addrs.is_empty() {
            self.peers.remove(&peer);
        }
        added
    }

    /// Remembered peers that `admitted` does not admit.
    fn others(&self, admitted: &dyn Fn(&libp2p::PeerId) -> bool) -> usize {
        self.peers.keys().filter(|p| !admitted(p)).count()
    }

    /// Appends `lines` to the journal and flushes it to disk.
    fn append(&mut self, lines: &[u8]) -> io::Result<()> {
        let mut append = OpenOptions::new();
        append.append(true);
        let mut file = owner_only::open_or_create(&self.journal, &append)?;
        file.write_all(lines)?;
        file.sync_data()?;
        if self.journal_bytes == 0 {
            // The journal may be new: its name must last a crash too.
            sync_dir(&self.journal)?;
        }
        self.journal_bytes += lines.len() as u64;
        Ok(())
    }

    /// Writes every remembered address into the snapshot, atomically, then empties the journal.
    pub(super) fn compact(&mut self) -> io::Result<()> {
        let text: BTreeMap<String, Vec<String>> = self
            .peers
            .iter()
            .map(|(p, a)| (p.to_string(), a.iter().map(|a| a.to_string()).collect()))
            .collect();
        owner_only::write_atomically(
            &self.snapshot,
            &serde_json::to_vec_pretty(&text).expect("a map of strings serialises"),
        )?;
        match OpenOptions::new().write(true).open(&self.journal) {
            Ok(file) => {
                file.set_len(0)?;
                file.sync_all()?;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        self.journal_bytes = 0;
        Ok(())
    }
}

/// The snapshot's peers and addresses; nothing if it is missing or damaged.
fn read_snapshot(path: &Path) -> Vec<(libp2p::PeerId, Vec<Multiaddr>)> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    let parsed: BTreeMap<String, Vec<String>> = match serde_json::from_str(&text) {
        Ok(parsed) => parsed,
        Err(error) => {
            tracing::warn!(path = %path.display(), %error, "ignoring a damaged list of peers");
            return Vec::new();
        }
    };
    parsed
        .into_iter()
        .filter_map(|(peer, addrs)| {
            Some((
                peer.parse().ok()?,
                addrs.iter().filter_map(|a| a.parse().ok()).collect(),
            ))
        })
        .collect()
}

/// The journal's addresses in the order written, and the journal's length in bytes. Reads at
/// most [`PEERS_JOURNAL_BYTES_MAX`] bytes (phr never writes more); skips, with a warning, a
/// torn last line and any line that is not an address of a peer.
fn read_journal(path: &Path) -> (Vec<(libp2p::PeerId, Multiaddr)>, u64) {
    let mut bytes = Vec::new();
    let read = File::open(path).and_then(|file| {
        let length = file.metadata()?.len();
        file.take(PEERS_JOURNAL_BYTES_MAX).read_to_end(&mut bytes)?;
        Ok(length)
    });
    let length = match read {
        Ok(length) => length,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return (Vec::new(), 0),
        Err(error) => {
            tracing::warn!(path = %path.display(), %error, "cannot read the journal of peers' addresses");
            return (Vec::new(), 0);
        }
    };
    if length > PEERS_JOURNAL_BYTES_MAX {
        tracing::warn!(
            path = %path.display(),
            length,
            "the journal of peers' addresses is longer than phr writes it; reading its start"
        );
    }
    // Everything after the last newline is a line a crash cut short.
    let whole = bytes
        .iter()
        .rposition(|b| *b == b'\n')
        .map_or(0, |last| last + 1);
    if whole < bytes.len() {
        tracing::warn!(path = %path.display(), "ignoring a torn last line of the journal of peers' addresses");
    }
    let mut damaged = 0;
    let addrs = bytes[..whole]
        .split(|b| *b == b'\n')
        .filter(|line| !line.is_empty())
        .filter_map(|line| {
            let parsed = serde_json::from_slice::<Line>(line)
                .ok()
                .and_then(|line| Some((line.peer.parse().ok()?, line.addr.parse().ok()?)));
            damaged += usize::from(parsed.is_none());
            parsed
        })
        .collect();
    if damaged > 0 {
        tracing::warn!(path = %path.display(), damaged, "ignoring damaged lines of the journal of peers' addresses");
    }
    (addrs, length)
}

/// Flushes the directory `path` is in, so that a file created in it lasts a crash.
fn sync_dir(path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => File::open(dir)?.sync_all(),
        _ => File::open(".")?.sync_all(),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    fn everyone(_: &libp2p::PeerId) -> bool {
        true
    }

    fn no_one(_: &libp2p::PeerId) -> bool {
        false
    }

    fn addr(n: usize) -> Multiaddr {
        format!("/ip4/10.0.{}.{}/tcp/4001", n / 256, n % 256)
            .parse()
            .unwrap()
    }

    fn journal_lines(dir: &Path) -> Vec<String> {
        std::fs::read_to_string(dir.join(PEERS_JOURNAL_FILE))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// A home with two peers remembered, the second's address in the journal only.
    fn two_peers(dir: &Path) -> (libp2p::PeerId, libp2p::PeerId) {
        let (a, b) = (libp2p::PeerId::random(), libp2p::PeerId::random());
        let mut remembered = Remembered::open(dir, &everyone);
        assert_eq!(
            remembered.remember([(a, addr(1)), (a, addr(2))], &everyone),
            2
        );
        assert_eq!(remembered.remember([(b, addr(3))], &everyone), 1);
        assert_eq!(journal_lines(dir).len(), 1, "the second batch is appended");
        (a, b)
    }

    #[test]
    fn every_address_appended_is_there_after_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = two_peers(dir.path());
        let reopened = Remembered::open(dir.path(), &everyone);
        assert_eq!(reopened.addrs(&a), [addr(1), addr(2)]);
        assert_eq!(reopened.addrs(&b), [addr(3)]);
        assert_eq!(reopened.peers().len(), 2);
    }

    #[test]
    fn a_torn_last_line_and_a_damaged_line_are_ignored_and_the_rest_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = two_peers(dir.path());
        let c = libp2p::PeerId::random();
        let journal = dir.path().join(PEERS_JOURNAL_FILE);
        let mut file = OpenOptions::new().append(true).open(&journal).unwrap();
        file.write_all(b"{\"peer\": \"not a peer\", \"addr\": \"/ip4/1.2.3.4/tcp/1\"}\n")
            .unwrap();
        writeln!(file, "{}", json_line(c, &addr(4))).unwrap();
        // A crash in the middle of an append.
        file.write_all(format!("{{\"peer\":\"{c}\",\"addr\":\"/ip4/10.0.0").as_bytes())
            .unwrap();
        drop(file);

        let reopened = Remembered::open(dir.path(), &everyone);
        assert_eq!(reopened.addrs(&a), [addr(1), addr(2)]);
        assert_eq!(reopened.addrs(&b), [addr(3)]);
        assert_eq!(reopened.addrs(&c), [addr(4)]);
        assert_eq!(reopened.peers().len(), 3);
        assert!(journal_lines(dir.path()).is_empty(), "merged on opening");
    }

    fn json_line(peer: libp2p::PeerId, addr: &Multiaddr) -> String {
        serde_json::to_string(&Line {
            peer: peer.to_string(),
            addr: addr.to_string(),
        })
        .unwrap()
    }

    #[test]
    fn a_damaged_or_missing_snapshot_is_an_empty_one() {
        let dir = tempfile::tempdir().unwrap();
        assert!(Remembered::open(dir.path(), &everyone).peers().is_empty());
        std::fs::write(dir.path().join(PEERS_FILE), b"{\"12D3").unwrap();
        let mut remembered = Remembered::open(dir.path(), &everyone);
        assert!(remembered.peers().is_empty());
        let a = libp2p::PeerId::random();
        remembered.remember([(a, addr(1))], &everyone);
        assert_eq!(Remembered::open(dir.path(), &everyone).addrs(&a), [addr(1)]);
    }

    #[test]
    fn compaction_empties_the_journal_and_keeps_everything() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = two_peers(dir.path());
        let mut remembered = Remembered::open(dir.path(), &everyone);
        assert!(journal_lines(dir.path()).is_empty(), "opening compacts");
        remembered.remember([(b, addr(5))], &everyone);
        assert_eq!(journal_lines(dir.path()).len(), 1);

        // A batch that would take the journal past its bound goes into the snapshot.
        let many: Vec<(libp2p::PeerId, Multiaddr)> = (0..1_000)
            .flat_map(|_| {
                let peer = libp2p::PeerId::random();
                (0..ADDRS_PER_PEER_MAX).map(move |n| (peer, addr(n)))
            })
            .collect();
        let bytes: usize = many.iter().map(|(p, a)| json_line(*p, a).len() + 1).sum();
        assert!(bytes as u64 > PEERS_JOURNAL_BYTES_MAX, "{bytes}");
        assert_eq!(remembered.remember(many.clone(), &everyone), many.len());
        assert!(journal_lines(dir.path()).is_empty(), "compacted");
        assert_eq!(
            std::fs::metadata(dir.path().join(PEERS_JOURNAL_FILE))
                .unwrap()
                .len(),
            0
        );

        let snapshot = read_snapshot(&dir.path().join(PEERS_FILE));
        assert_eq!(snapshot.len(), 1_002);
        let reopened = Remembered::open(dir.path(), &everyone);
        assert_eq!(reopened.addrs(&a), [addr(1), addr(2)]);
        assert_eq!(reopened.addrs(&b), [addr(3), addr(5)]);
        for (peer, addr) in &many {
            assert!(reopened.addrs(peer).contains(addr));
        }
    }

    #[test]
    fn a_second_address_for_a_peer_appends_one_line_and_leaves_the_snapshot_alone() {
        let dir = tempfile::tempdir().unwrap();
        let snapshot = dir.path().join(PEERS_FILE);
        let a = libp2p::PeerId::random();
        let mut remembered = Remembered::open(dir.path(), &everyone);
        remembered.remember([(a, addr(1))], &everyone);
        let bytes = std::fs::read(&snapshot).unwrap();
        let before = std::fs::metadata(&snapshot).unwrap();

        assert_eq!(remembered.remember([(a, addr(2))], &everyone), 1);
        let after = std::fs::metadata(&snapshot).unwrap();
        assert_eq!(std::fs::read(&snapshot).unwrap(), bytes);
        assert_eq!(
            (after.ino(), after.mtime(), after.mtime_nsec()),
            (before.ino(), before.mtime(), before.mtime_nsec()),
            "the snapshot was rewritten"
        );
        assert_eq!(journal_lines(dir.path()), [json_line(a, &addr(2))]);

        // An address it holds already writes nothing.
        assert_eq!(remembered.remember([(a, addr(2))], &everyone), 0);
        assert_eq!(journal_lines(dir.path()).len(), 1);
    }

    #[test]
    fn addresses_per_peer_and_peers_no_ledger_admits_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let mut remembered = Remembered::open(dir.path(), &everyone);
        let a = libp2p::PeerId::random();
        let kept = remembered.remember((0..ADDRS_PER_PEER_MAX + 5).map(|n| (a, addr(n))), &no_one);
        assert_eq!(kept, ADDRS_PER_PEER_MAX);

        let strangers: Vec<_> = (0..PEERS_MAX + 10)
            .map(|n| (libp2p::PeerId::random(), addr(n)))
            .collect();
        remembered.remember(strangers.clone(), &no_one);
        assert_eq!(remembered.peers().len(), PEERS_MAX);
        // A peer a ledger admits is kept beyond the bound.
        let admitted = libp2p::PeerId::random();
        remembered.remember([(admitted, addr(1))], &|p: &libp2p::PeerId| *p == admitted);
        assert_eq!(remembered.peers().len(), PEERS_MAX + 1);

        // So it is on opening: admitted peers, and PEERS_MAX others.
        let reopened = Remembered::open(dir.path(), &|p: &libp2p::PeerId| *p == admitted);
        assert_eq!(reopened.peers().len(), PEERS_MAX + 1);
        assert_eq!(reopened.addrs(&admitted), [addr(1)]);
    }
}
