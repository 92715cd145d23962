//! The end-of-run checks: once the network has settled, every admitted replica holds the
//! same ledger, every replica of a section the same blobs and the same document, and no
//! acknowledged write is missing. A failed check describes the difference in detail.

use std::collections::{BTreeMap, BTreeSet};

use phr_core::{ledger::LedgerState, section::Section, store::Store};

use super::{Sim, node::SimNode};

/// What each node that may read some section reads: the document and the sections it may read.
type Documents = BTreeMap<usize, (phr_core::Record, Vec<Section>)>;

impl Sim {
    /// The end state: every admitted replica of a section holds the same blobs and reads the
    /// same document; no acknowledged write is missing.
    pub(super) fn finish(&mut self) -> Result<(), String> {
        let now = self.now_ms;
        let state = self.checker.global().state().clone();
        self.check_ledgers(&state, now)?;
        let mut documents = self.documents(&state, now)?;
        for section in Section::ALL {
            self.check_blobs(&state, now, section)?;
            self.check_documents(&mut documents, section)?;
        }
        for (i, (doc, _)) in &documents {
            if !self.nodes[*i].hostile {
                let replica = &self.nodes[*i].replicas()[&self.record];
                self.checker
                    .view(&self.nodes[*i], replica, doc, &self.withdrawals)?;
            }
        }
        self.check_writes(&documents)
    }

    /// Every admitted node holds the same ledger.
    fn check_ledgers(&self, state: &LedgerState, now: i64) -> Result<(), String> {
        let ledger_ids = |node: &SimNode| -> BTreeSet<_> {
            node.replicas()
                .get(&self.record)
                .map(|r| r.ledger().ops().map(|op| op.id()).collect())
                .unwrap_or_default()
        };
        let admitted: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| state.admitted(&self.nodes[i].peer(), now))
            .collect();
        for &i in &admitted {
            if ledger_ids(&self.nodes[i]) != ledger_ids(&self.nodes[admitted[0]]) {
                let (a, b) = (
                    ledger_ids(&self.nodes[i]),
                    ledger_ids(&self.nodes[admitted[0]]),
                );
                let kinds = |ids: Vec<&phr_core::keys::OpId>| -> Vec<String> {
                    ids.into_iter()
                        .filter_map(|id| self.checker.global().get(id))
                        .map(|op| format!("{:?}", op.op().body).chars().take(40).collect())
                        .collect()
                };
                return Err(format!(
                    "{} and {} hold different ledgers: only the first {:?}, only the second {:?}",
                    self.nodes[i].name,
                    self.nodes[admitted[0]].name,
                    kinds(a.difference(&b).collect()),
                    kinds(b.difference(&a).collect()),
                ));
            }
        }
        Ok(())
    }

    /// The document of each node that may read some section of the record.
    fn documents(&mut self, state: &LedgerState, now: i64) -> Result<Documents, String> {
        let mut documents = BTreeMap::new();
        for i in 0..self.nodes.len() {
            let readable: Vec<Section> = Section::ALL
                .into_iter()
                .filter(|s| state.can_read(&self.nodes[i].peer(), *s, now))
                .collect();
            if !readable.is_empty() {
                let doc = self.nodes[i].materialise(self.record).ok_or_else(|| {
                    format!(
                        "{} may read the record but does not hold it",
                        self.nodes[i].name
                    )
                })?;
                documents.insert(i, (doc, readable));
            }
        }
        Ok(documents)
    }

    /// Every node that may read a section, and every relay, holds the same blobs of it.
    fn check_blobs(&self, state: &LedgerState, now: i64, section: Section) -> Result<(), String> {
        let holders: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| {
                let peer = self.nodes[i].peer();
                state.can_read(&peer, section, now) || state.is_relay(&peer, now)
            })
            .collect();
        let blobs = |i: usize| self.live_blobs(section, i);
        for &i in &holders {
            if blobs(i) != blobs(holders[0]) {
                return Err(format!(
                    "{} and {} hold different {section} blobs ({} and {}): only the first {:?}, only the second {:?}",
                    self.nodes[i].name,
                    self.nodes[holders[0]].name,
                    blobs(i).len(),
                    blobs(holders[0]).len(),
                    self.describe_extra_blobs(section, i, holders[0]),
                    self.describe_extra_blobs(section, holders[0], i),
                ));
            }
        }
        Ok(())
    }

    /// The blobs of a section a node stores, void ones aside.
    fn live_blobs(&self, section: Section, i: usize) -> BTreeSet<phr_core::keys::BlobId> {
        // Void blobs aside: a compaction whose author was removed after it arrived stays,
        // restricted, where it arrived before the news, and is refused where it came after.
        let global = self.checker.global();
        let store = &self.nodes[i].store;
        store
            .blob_ids(&self.record, section)
            .into_iter()
            .filter(|id| {
                let bytes = store.blob(&self.record, section, id).ok().flatten();
                !bytes
                    .and_then(|b| phr_core::blob::Blob::decode(b).ok())
                    .is_some_and(|blob| phr_core::consent::withdrawn(&blob, global))
            })
            .collect()
    }

    /// The blobs of a section `node` holds and `others` does not, with what both know of them.
    fn describe_extra_blobs(&self, section: Section, node: usize, others: usize) -> Vec<String> {
        let blobs = |i: usize| self.live_blobs(section, i);
        blobs(node)
            .difference(&blobs(others))
            .map(|id| {
                let bytes = self.nodes[node]
                    .store
                    .blob(&self.record, section, id)
                    .ok()
                    .flatten()
                    .unwrap_or_default();
                let kind = phr_core::blob::Blob::decode(bytes)
                    .map(|b| {
                        let by = self.name_of(&b.header().author);
                        format!("{:?} by {by}", b.header().kind)
                    })
                    .unwrap_or_default();
                let replacer = self.nodes[others]
                    .store
                    .replaced_by(&self.record, section, id)
                    .ok()
                    .flatten()
                    .and_then(|c| {
                        self.nodes[others]
                            .store
                            .blob(&self.record, section, &c)
                            .ok()
                            .flatten()
                    })
                    .and_then(|b| phr_core::blob::Blob::decode(b).ok())
                    .map(|b| {
                        let by = self.name_of(&b.header().author);
                        format!("by a {:?} of {by}", b.header().kind)
                    })
                    .unwrap_or_default();
                let replacer_id = self.nodes[others]
                    .store
                    .replaced_by(&self.record, section, id)
                    .ok()
                    .flatten();
                let here_has = replacer_id.is_some_and(|c| {
                    self.nodes[node].store.blob(&self.record, section, &c).ok().flatten().is_some()
                });
                let here_held = replacer_id.is_some_and(|c| {
                    self.nodes[node].store.held(&self.record).unwrap_or_default().iter().any(|(_, h, _)| *h == c)
                });
                let kind = format!("{kind} ({replacer}; replacer {:?} stored here {here_has}, held here {here_held})", replacer_id.map(|c| c.short()));
                let replaced = self.nodes[others]
                    .store
                    .is_replaced(&self.record, section, id)
                    .unwrap_or(false);
                let in_memory = self.nodes[node]
                    .replicas()
                    .get(&self.record)
                    .is_some_and(|r| r.blob_ids(section).any(|b| b == *id));
                let there = self.nodes[others]
                    .replicas()
                    .get(&self.record)
                    .is_some_and(|r| r.blob_ids(section).any(|b| b == *id));
                let items = |n: usize| {
                    self.nodes[n]
                        .replicas()
                        .get(&self.record)
                        .map(|r| {
                            r.reconcile_items(phr_core::replica::Topic::Section(
                                section,
                            ))
                        })
                        .unwrap_or_default()
                };
                format!(
                    "{} {kind} (replaced there: {replaced}; held in memory here: \
                     {in_memory}, there: {there}; items here {:?} there {:?})",
                    id.short(),
                    items(node)
                        .iter()
                        .map(|(t, i)| (t, i[0]))
                        .collect::<Vec<_>>(),
                    items(others)
                        .iter()
                        .map(|(t, i)| (t, i[0]))
                        .collect::<Vec<_>>(),
                )
            })
            .collect()
    }

    /// Every node that may read a section reads the same document of it.
    fn check_documents(&self, documents: &mut Documents, section: Section) -> Result<(), String> {
        let listing = section_listing(documents, section);
        let changes: BTreeMap<usize, BTreeMap<automerge::ChangeHash, String>> = documents
            .iter_mut()
            .map(|(i, (doc, _))| {
                let metas = doc
                    .doc_for_provenance(section)
                    .get_changes_meta(&[])
                    .into_iter()
                    .map(|m| {
                        let actor = m.actor.to_hex_string();
                        (m.hash, format!("{}:{}", &actor[..8], m.seq))
                    })
                    .collect();
                (*i, metas)
            })
            .collect();
        let mut heads = None;
        for (i, (doc, readable)) in documents.iter_mut() {
            if !readable.contains(&section) {
                continue;
            }
            let these = doc.heads().remove(&section);
            match &heads {
                None => heads = Some((these, *i)),
                Some((first, j)) if *first != these => {
                    let only = |a: usize, b: usize| -> Vec<String> {
                        let (Some(x), Some(y)) = (changes.get(&a), changes.get(&b)) else {
                            return Vec::new();
                        };
                        x.iter()
                            .filter(|(h, _)| !y.contains_key(h))
                            .map(|(_, d)| d.clone())
                            .collect()
                    };
                    let names: Vec<String> = self
                        .nodes
                        .iter()
                        .map(|n| {
                            format!(
                                "{}={}",
                                n.name,
                                phr_core::keys::hex(&n.peer().public_key()[..4])
                            )
                        })
                        .collect();
                    let fate = self.blob_fates(section, *i, *j);
                    return Err(format!(
                        "fates {fate:?}; {} and {} read different {section} documents: {:?} against {:?}; changes only in the first {:?}, only in the second {:?}; actors {names:?}",
                        self.nodes[*i].name,
                        self.nodes[*j].name,
                        listing.get(i),
                        listing.get(j),
                        only(*i, *j),
                        only(*j, *i),
                    ));
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// What `b` knows of each blob of a section `a` stores.
    fn blob_fates(&self, section: Section, a: usize, b: usize) -> Vec<String> {
        self.nodes[a]
            .store
            .blobs(&self.record, section)
            .unwrap_or_default()
            .into_iter()
            .map(|(id, _)| {
                let st = &self.nodes[b].store;
                let stored = st.blob(&self.record, section, &id).ok().flatten().is_some();
                let by = st.replaced_by(&self.record, section, &id).ok().flatten();
                let by_desc = by
                    .and_then(|c| st.blob(&self.record, section, &c).ok().flatten())
                    .and_then(|x| phr_core::blob::Blob::decode(x).ok())
                    .map(|x| {
                        format!(
                            "{:?} by {} void {}",
                            x.header().kind,
                            phr_core::keys::hex(&x.header().author.public_key()[..4]),
                            phr_core::consent::withdrawn(&x, self.checker.global())
                        )
                    });
                format!(
                    "{}: stored there {stored}, replaced there by {:?} {:?}",
                    id.short(),
                    by.map(|c| c.short()),
                    by_desc
                )
            })
            .collect()
    }

    /// No acknowledged write is missing from a node that may read its section.
    fn check_writes(&self, documents: &Documents) -> Result<(), String> {
        for (index, (section, key, marker)) in self.writes.iter().enumerate() {
            // A void write must be nowhere (checked above); an accepted one everywhere.
            if self.withdrawals.void(marker).is_some() {
                continue;
            }
            // A write built on a void one is left out with it, and its writer writes it again,
            // with its own earlier versions that it superseded, and even if a void write
            // superseded it: so only a write that another party's later honest write superseded
            // (built on it, and so left out too: that party writes its own again, on a past
            // without it) may be gone.
            let on_void = self
                .built_on
                .get(marker)
                .is_some_and(|seen| seen.iter().any(|m| self.withdrawals.void(m).is_some()));
            let author = self.withdrawals.author_of.get(marker);
            let superseded_by_another = self.writes[index + 1..].iter().any(|(s, k, later)| {
                s == section
                    && k == key
                    && self.withdrawals.author_of.get(later) != author
                    && self.withdrawals.void(later).is_none()
                    && self
                        .built_on
                        .get(later)
                        .is_some_and(|seen| seen.contains(marker))
            });
            if on_void && superseded_by_another {
                continue;
            }
            for (i, (doc, readable)) in documents {
                if !readable.contains(section) || self.nodes[*i].hostile {
                    continue;
                }
                // A key the node does not hold at all reads as an empty history, so the report
                // below says what every node holds of it.
                let history = doc.history(key).unwrap_or_default();
                if !history.iter().any(|v| v.resource["valueString"] == *marker) {
                    let held: Vec<usize> = self
                        .nodes
                        .iter()
                        .map(|n| n.store.held(&self.record).map(|h| h.len()).unwrap_or(0))
                        .collect();
                    let writes_of_key: Vec<String> = self
                        .writes
                        .iter()
                        .filter(|(s, k, _)| s == section && k == key)
                        .map(|(_, _, m)| {
                            let void = self.withdrawals.void(m).is_some();
                            let on: Vec<&String> = self
                                .built_on
                                .get(m)
                                .map(|seen| seen.iter().collect())
                                .unwrap_or_default();
                            format!("`{m}`{} built on {on:?}", if void { " (void)" } else { "" })
                        })
                        .collect();
                    let versions: Vec<String> = history
                        .iter()
                        .map(|v| v.resource["valueString"].to_string())
                        .collect();
                    let everywhere: Vec<String> = documents
                        .iter()
                        .map(|(j, (d, _))| {
                            let h: Vec<String> = d
                                .history(key)
                                .unwrap_or_default()
                                .iter()
                                .map(|v| v.resource["valueString"].to_string())
                                .collect();
                            format!("{}: {h:?}", self.nodes[*j].name)
                        })
                        .collect();
                    return Err(format!(
                        "{} lost the version `{marker}` of {key} (held per node {held:?}); \
                         it reads {versions:?}; the writes of {key}: {writes_of_key:?}; \
                         each node reads {everywhere:?}",
                        self.nodes[*i].name
                    ));
                }
            }
        }
        Ok(())
    }
}

/// What each node reads of a section: every resource with a marker, its history, its conflict.
fn section_listing(documents: &Documents, section: Section) -> BTreeMap<usize, Vec<String>> {
    documents
        .iter()
        .map(|(i, (doc, _))| {
            let lines = doc
                .resources(section)
                .unwrap_or_default()
                .into_iter()
                .filter(|(_, value, _)| !value["valueString"].is_null())
                .map(|(key, value, conflict)| {
                    if !conflict {
                        let history = doc
                            .history(&key)
                            .unwrap_or_default()
                            .iter()
                            .map(|v| format!("{}<-{:?}", v.id, v.replaces))
                            .collect::<Vec<_>>()
                            .join(", ");
                        return format!("{key}={} history {history}", value["valueString"]);
                    }
                    let versions = match doc.current(&key) {
                        Ok(Some(phr_core::record::Current::Conflict(vs))) => vs
                            .iter()
                            .map(|v| format!("{} ({})", v.resource["valueString"], v.id))
                            .collect::<Vec<_>>()
                            .join(" | "),
                        _ => String::new(),
                    };
                    let history = doc
                        .history(&key)
                        .unwrap_or_default()
                        .iter()
                        .map(|v| format!("{}<-{:?}", v.id, v.replaces))
                        .collect::<Vec<_>>()
                        .join(", ");
                    format!("{key}= conflict: {versions}; history {history}")
                })
                .collect();
            (*i, lines)
        })
        .collect()
}
