//! A large value costs no more stack in `insert` than in `HashMap::insert`: the node is
//! built in place, so the value is copied from the caller's frame straight into the heap.

use restable::ResTable;
use std::collections::HashMap;
use std::thread;

/// Big enough that one extra stack copy overflows the thread's stack, small enough that
/// `HashMap::insert` fits. Release builds only (`.ci/run` runs this file with
/// `--release`): unoptimized code keeps several copies of any moved value, `HashMap`'s
/// included.
const VALUE: usize = 768 << 10;
const STACK: usize = 2 << 20;

fn on_small_stack(f: impl FnOnce() + Send + 'static) {
    thread::Builder::new()
        .stack_size(STACK)
        .spawn(f)
        .unwrap()
        .join()
        .expect("the thread panicked");
}

#[test]
#[cfg_attr(debug_assertions, ignore = "needs --release")]
fn hash_map_baseline_fits() {
    // If this one overflows, the limits above no longer measure what they should.
    on_small_stack(|| {
        let mut map = HashMap::new();
        map.insert(1u32, [7u8; VALUE]);
        assert_eq!(map.get(&1).map(|v| v[VALUE - 1]), Some(7));
    });
}

#[test]
#[cfg_attr(debug_assertions, ignore = "needs --release")]
fn a_large_value_is_built_in_place() {
    on_small_stack(|| {
        let table = ResTable::new();
        let owner = table.insert(&[1u32], [7u8; VALUE]).unwrap();
        assert_eq!(table.get(&1).map(|v| v[VALUE - 1]), Some(7));
        drop(owner);
    });
}
