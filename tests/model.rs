//! Model test: random sequences of table operations on one thread, checked step by step
//! against a plain sequential model, drop counts included.
//!
//! `PROPTEST_CASES` raises the case count (default 512).

mod common;

use common::colliding::Colliding;
use common::{count, counter, Counted};
use proptest::prelude::*;
use proptest::sample::Index;
use restable::{Builder, Dying, InsertErrorKind, Owner, Ref, ResTable};
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone)]
enum Op {
    Insert(Vec<u8>),
    Get(u8),
    CloneRef(Index),
    DropRef(Index),
    Kill(Index),
    TryDrain(Index),
    Drain(Index),
    DropOwner(Index),
    DropDying(Index),
}

fn op() -> impl Strategy<Value = Op> {
    // A key space of 10 keys and 1–6 keys per object: conflicts and reuse are common.
    prop_oneof![
        3 => prop::collection::vec(0u8..10, 1..=6).prop_map(Op::Insert),
        1 => Just(Op::Insert(Vec::new())),
        4 => (0u8..10).prop_map(Op::Get),
        1 => any::<Index>().prop_map(Op::CloneRef),
        3 => any::<Index>().prop_map(Op::DropRef),
        2 => any::<Index>().prop_map(Op::Kill),
        1 => any::<Index>().prop_map(Op::TryDrain),
        1 => any::<Index>().prop_map(Op::Drain),
        1 => any::<Index>().prop_map(Op::DropOwner),
        1 => any::<Index>().prop_map(Op::DropDying),
    ]
}

/// What the model knows of one object.
#[derive(Debug)]
struct Object {
    keys: Vec<u8>,
    live: bool,
    refs: usize,
    /// Times its value should have been dropped by now (0 or 1).
    dropped: usize,
    /// An owner or dying handle still exists.
    owned: bool,
    drops: Arc<AtomicUsize>,
}

#[derive(Default)]
struct Model {
    objects: Vec<Object>,
    /// key → object id, for live objects.
    live: HashMap<u8, usize>,
}

impl Model {
    fn expect_insert(&self, keys: &[u8]) -> Result<(), (InsertErrorKind, Option<u8>)> {
        if keys.is_empty() {
            return Err((InsertErrorKind::NoKeys, None));
        }
        for (i, key) in keys.iter().enumerate() {
            if keys[..i].contains(key) {
                return Err((InsertErrorKind::DuplicateKey, Some(*key)));
            }
        }
        match keys.iter().find(|key| self.live.contains_key(key)) {
            Some(key) => Err((InsertErrorKind::KeyInUse, Some(*key))),
            None => Ok(()),
        }
    }

    /// A reference or owner let go: drop the value if it was the last holder.
    fn release(&mut self, id: usize) {
        let object = &mut self.objects[id];
        if object.refs == 0 && !object.owned {
            object.dropped += 1;
        }
    }

    fn kill(&mut self, id: usize) {
        let object = &mut self.objects[id];
        object.live = false;
        for key in &object.keys {
            self.live.remove(key);
        }
    }
}

fn pick<X>(items: &mut Vec<X>, at: &Index) -> Option<X> {
    (!items.is_empty()).then(|| items.swap_remove(at.index(items.len())))
}

fn run<S: BuildHasher>(ops: Vec<Op>, table: ResTable<u8, Counted, S>) -> Result<(), TestCaseError> {
    let mut model = Model::default();
    let mut owners: Vec<(usize, Owner<u8, Counted>)> = Vec::new();
    let mut dyings: Vec<(usize, Dying<u8, Counted>)> = Vec::new();
    let mut refs: Vec<(usize, Ref<'_, u8, Counted>)> = Vec::new();

    for op in ops {
        match op {
            Op::Insert(keys) => {
                let id = model.objects.len();
                let drops = counter();
                let expected = model.expect_insert(&keys);
                match table.insert(&keys, Counted::new(id as u64, &drops)) {
                    Ok(owner) => {
                        prop_assert_eq!(expected, Ok(()));
                        prop_assert_eq!(owner.keys(), &keys[..]);
                        for key in &keys {
                            model.live.insert(*key, id);
                        }
                        owners.push((id, owner));
                    }
                    Err(err) => {
                        prop_assert_eq!(expected, Err((err.kind(), err.key().copied())));
                        let value = err.into_value();
                        prop_assert_eq!(value.id, id as u64);
                        drop(value);
                        prop_assert_eq!(count(&drops), 1);
                        continue; // not an object of the model
                    }
                }
                model.objects.push(Object {
                    keys,
                    live: true,
                    refs: 0,
                    dropped: 0,
                    owned: true,
                    drops,
                });
            }
            Op::Get(key) => match (table.get(&key), model.live.get(&key)) {
                (Some(r), Some(&id)) => {
                    prop_assert_eq!(r.id, id as u64);
                    prop_assert!(r.keys().contains(&key));
                    model.objects[id].refs += 1;
                    refs.push((id, r));
                }
                (None, None) => prop_assert!(!table.contains_key(&key)),
                (got, want) => prop_assert!(false, "get({key}) = {got:?}, model {want:?}"),
            },
            Op::CloneRef(at) => {
                if !refs.is_empty() {
                    let (id, r) = &refs[at.index(refs.len())];
                    let (id, r) = (*id, r.clone());
                    model.objects[id].refs += 1;
                    refs.push((id, r));
                }
            }
            Op::DropRef(at) => {
                if let Some((id, r)) = pick(&mut refs, &at) {
                    drop(r);
                    model.objects[id].refs -= 1;
                    model.release(id);
                }
            }
            Op::Kill(at) => {
                if let Some((id, owner)) = pick(&mut owners, &at) {
                    let dying = owner.kill();
                    model.kill(id);
                    prop_assert_eq!(dying.refs(), model.objects[id].refs);
                    dyings.push((id, dying));
                }
            }
            Op::TryDrain(at) => {
                if let Some((id, dying)) = pick(&mut dyings, &at) {
                    match dying.try_drain() {
                        Ok(value) => {
                            prop_assert_eq!(model.objects[id].refs, 0);
                            prop_assert_eq!(value.id, id as u64);
                            model.objects[id].owned = false;
                            drop(value);
                            model.objects[id].dropped += 1;
                        }
                        Err(dying) => {
                            prop_assert!(model.objects[id].refs > 0);
                            dyings.push((id, dying));
                        }
                    }
                }
            }
            Op::Drain(at) => {
                if let Some((id, dying)) = pick(&mut dyings, &at) {
                    if model.objects[id].refs > 0 {
                        // A plain drain would wait for ourselves; it must time out instead.
                        let dying = dying.drain_timeout(Duration::from_micros(10));
                        prop_assert!(dying.is_err(), "drain returned with references out");
                        dyings.push((id, dying.unwrap_err()));
                    } else {
                        let value = dying.drain();
                        prop_assert_eq!(value.id, id as u64);
                        model.objects[id].owned = false;
                        drop(value);
                        model.objects[id].dropped += 1;
                    }
                }
            }
            Op::DropOwner(at) => {
                if let Some((id, owner)) = pick(&mut owners, &at) {
                    drop(owner);
                    model.kill(id);
                    model.objects[id].owned = false;
                    model.release(id);
                }
            }
            Op::DropDying(at) => {
                if let Some((id, dying)) = pick(&mut dyings, &at) {
                    drop(dying);
                    model.objects[id].owned = false;
                    model.release(id);
                }
            }
        }
        prop_assert_eq!(
            table.len(),
            model
                .live
                .values()
                .collect::<std::collections::HashSet<_>>()
                .len()
        );
        for (id, object) in model.objects.iter().enumerate() {
            prop_assert_eq!(
                count(&object.drops),
                object.dropped,
                "drops of object {}",
                id
            );
            prop_assert!(object.dropped <= 1);
            prop_assert_eq!(object.live, model.live.values().any(|&live| live == id));
        }
    }

    // Tear down: everything still held lets go; every value is dropped exactly once.
    drop(refs);
    drop(owners);
    drop(dyings);
    for (id, object) in model.objects.iter().enumerate() {
        prop_assert_eq!(
            count(&object.drops),
            1,
            "object {} not dropped exactly once",
            id
        );
    }
    prop_assert!(table.is_empty());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(512),
        ..ProptestConfig::default()
    })]

    #[test]
    fn table_matches_sequential_model(ops in prop::collection::vec(op(), 1..80)) {
        run(ops, ResTable::new())?;
    }

    /// The same in a table whose nodes are carved from pages: nodes of one to six keys
    /// (one or two lines) share pages and are recycled.
    #[test]
    fn cache_aligned_table_matches_sequential_model(ops in prop::collection::vec(op(), 1..80)) {
        run(ops, Builder::new().cache_aligned().build())?;
    }

    /// Every key in one bucket: past seven live keys, lookups run on through overflowing
    /// buckets, unlinks clear slots in the middle of the cluster, and rebuilds happen at
    /// every size.
    #[test]
    fn colliding_hashes_match_the_model(ops in prop::collection::vec(op(), 1..80)) {
        run(ops, ResTable::with_hasher(Colliding))?;
    }
}
