//! A server's connection table under tokio: connections found by id or by name, worker
//! tasks holding their connection across `.await`s, and a close by name that waits for
//! the workers — asynchronously, with a deadline, without losing the connection when
//! the deadline passes.
//!
//! Run: `cargo run --release --example connections`
//!
//! The key type shows the one trap of looking up by a borrowed form: the borrowed form
//! must hash exactly as the owned key does. Here both hash through one view type, so
//! that holds by construction (see `ConnKey`'s `Hash`).

use restable::{Drain, Equivalent, ResTable};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// What the table keeps per connection. Values are shared (a lookup gives `&Conn`), so
/// what changes lives in atomics.
struct Conn {
    peer: String,
    bytes: AtomicU64,
}

/// A connection answers to its id and to its peer's name.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ConnKey {
    Id(u64),
    Name(String),
}

/// A borrowed `ConnKey`: what lookups use, so that finding a connection by name does
/// not allocate a `String`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum ConnKeyRef<'a> {
    Id(u64),
    Name(&'a str),
}

impl ConnKey {
    fn as_ref(&self) -> ConnKeyRef<'_> {
        match self {
            ConnKey::Id(id) => ConnKeyRef::Id(*id),
            ConnKey::Name(name) => ConnKeyRef::Name(name),
        }
    }
}

/// The owned key hashes as its borrowed form does — by hashing that form — so a lookup
/// by `ConnKeyRef` can never miss a key that is there. (A derived `Hash` on each type
/// happens to agree only while both enums list the same variants in the same order; a
/// `Borrow<str>` impl on `ConnKey` compiles but hashes differently, and `get("alice")`
/// then silently finds nothing.)
impl Hash for ConnKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_ref().hash(state);
    }
}

impl Equivalent<ConnKey> for ConnKeyRef<'_> {
    fn equivalent(&self, key: &ConnKey) -> bool {
        *self == key.as_ref()
    }
}

type Conns = ResTable<ConnKey, Conn>;

/// Opens a connection: under its id and its peer's name, left with the table.
fn open(conns: &Conns, id: u64, peer: &str) {
    let keys = [ConnKey::Id(id), ConnKey::Name(peer.to_string())];
    let conn = Conn {
        peer: peer.to_string(),
        bytes: AtomicU64::new(0),
    };
    conns
        .insert_detached(&keys, conn)
        .unwrap_or_else(|err| panic!("open {peer}: {err}"));
}

/// A worker: finds its connection by id and keeps it across `.await`s (an `OwnedRef`
/// does not borrow the table), as a task serving requests would.
async fn serve(conns: Arc<Conns>, id: u64, requests: u32) -> u64 {
    let Some(conn) = conns.get_owned(&ConnKeyRef::Id(id)) else {
        return 0; // closed before we started: nothing to serve
    };
    for _ in 0..requests {
        conn.bytes.fetch_add(100, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    conn.bytes.load(Ordering::Relaxed)
}

/// Closes the connection to `peer`: unreachable, and its id and name free, as soon as
/// this returns; the connection itself comes back from the drain, once the workers still
/// holding it let go (see [`closed`]).
fn close(conns: &Conns, peer: &str) -> Option<Drain<ConnKey, Conn>> {
    Some(conns.remove(&ConnKeyRef::Name(peer))?.drain_async())
}

/// Waits for a closing connection's last worker, saying so every `deadline`.
async fn closed(mut drain: Drain<ConnKey, Conn>, deadline: Duration) -> Conn {
    loop {
        // `&mut drain`, not the `Dying`: a timed-out wait keeps the drain, to wait again.
        match tokio::time::timeout(deadline, &mut drain).await {
            Ok(conn) => return conn,
            Err(_) => {
                let refs = drain.dying().map_or(0, |dying| dying.refs());
                println!("closing: still held by {refs} worker(s), waiting on");
            }
        }
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let conns: Arc<Conns> = Arc::new(ResTable::new());
        open(&conns, 1, "alice");
        open(&conns, 2, "bob");
        let workers: Vec<_> = [(1, 40), (1, 10), (2, 5)]
            .into_iter()
            .map(|(id, requests)| tokio::spawn(serve(Arc::clone(&conns), id, requests)))
            .collect();
        tokio::time::sleep(Duration::from_millis(5)).await;

        // Close alice while two workers serve her: the name is free at once.
        let closing = close(&conns, "alice").expect("alice was open");
        assert!(conns.get(&ConnKeyRef::Name("alice")).is_none());
        open(&conns, 3, "alice"); // a reconnect may take the name right away
        let alice = closed(closing, Duration::from_millis(20)).await;
        println!(
            "closed {}: {} bytes served",
            alice.peer,
            alice.bytes.load(Ordering::Relaxed)
        );
        assert_eq!(alice.bytes.load(Ordering::Relaxed), 50 * 100);

        for worker in workers {
            worker.await.expect("a worker");
        }
        let left: Vec<String> = conns.iter().map(|conn| conn.peer.clone()).collect();
        println!("open: {left:?}");
        assert_eq!(conns.len(), 2);
        let bob = closed(close(&conns, "bob").unwrap(), Duration::from_secs(1)).await;
        assert_eq!(bob.bytes.load(Ordering::Relaxed), 5 * 100);
        assert!(close(&conns, "carol").is_none());
    });
}
