//! A hypervisor's device table: each virtual device answers to its PCI address, its
//! interrupt line and its MMIO page; vCPU threads look devices up by MMIO page on every
//! exit and interrupt threads by line, while the control path hot-unplugs them — one
//! device with a deadline (a stuck device must not hang the unplug), a whole bus at once.
//!
//! Run: `cargo run --release --example devices`

use restable::ResTable;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::Duration;

/// The three ids of a device, kept apart by the variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum DevKey {
    /// bus << 8 | device << 3 | function.
    Pci(u16),
    Irq(u32),
    /// MMIO page number.
    Mmio(u64),
}

#[derive(Debug)]
struct Device {
    name: String,
    pci: u16,
    /// Work done on the device, from any thread: a `Ref` gives `&Device` only.
    exits: AtomicU64,
    interrupts: AtomicU64,
}

fn keys(bus: u16, slot: u16) -> [DevKey; 3] {
    let pci = bus << 8 | slot << 3;
    [
        DevKey::Pci(pci),
        DevKey::Irq(32 + u32::from(pci)),
        DevKey::Mmio(0xfe000 + u64::from(pci)),
    ]
}

fn plug(devices: &ResTable<DevKey, Device>, bus: u16, slot: u16) {
    let keys = keys(bus, slot);
    let DevKey::Pci(pci) = keys[0] else {
        unreachable!()
    };
    let device = Device {
        name: format!("virtio-{bus:02x}:{slot:02x}"),
        pci,
        exits: AtomicU64::new(0),
        interrupts: AtomicU64::new(0),
    };
    devices.insert_detached(&keys, device).expect("a free slot");
}

struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

fn main() {
    let devices = ResTable::new();
    for bus in 0..2 {
        for slot in 0..4 {
            plug(&devices, bus, slot);
        }
    }
    let stop = AtomicBool::new(false);
    thread::scope(|s| {
        // Stops the device threads when the control path is done, or panics.
        let _stop = StopOnDrop(&stop);
        // vCPUs: an MMIO exit looks the device up by page, every time.
        for vcpu in 0..3u64 {
            let (devices, stop) = (&devices, &stop);
            s.spawn(move || {
                let mut page = vcpu;
                while !stop.load(Ordering::Relaxed) {
                    page = (page + 7) % 0x300;
                    if let Some(dev) = devices.get(&DevKey::Mmio(0xfe000 + page)) {
                        dev.exits.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
        // An interrupt thread, by line; one device's handler is stuck for a while.
        let (devices_ref, stop_ref) = (&devices, &stop);
        s.spawn(move || {
            let mut line = 0;
            while !stop_ref.load(Ordering::Relaxed) {
                line = (line + 1) % 0x300;
                if let Some(dev) = devices_ref.get(&DevKey::Irq(32 + line)) {
                    dev.interrupts.fetch_add(1, Ordering::Relaxed);
                    if dev.pci == 0x0008 && dev.interrupts.load(Ordering::Relaxed) == 1 {
                        thread::sleep(Duration::from_millis(300)); // stuck in its handler
                    }
                }
            }
        });
        thread::sleep(Duration::from_millis(50));

        // Unplug 00:01 (pci 0x0008) with a deadline: its handler may be stuck.
        let dying = devices.remove(&DevKey::Pci(0x0008)).expect("plugged");
        assert!(devices.get(&DevKey::Irq(32 + 0x0008)).is_none()); // unreachable at once
        let device = match dying.drain_timeout(Duration::from_millis(100)) {
            Ok(device) => device,
            Err(dying) => {
                println!(
                    "unplug {}: {} reference(s) still out after 100 ms; waiting on",
                    dying.name,
                    dying.refs()
                );
                dying.drain()
            }
        };
        println!(
            "unplugged {}: {} exits, {} interrupts",
            device.name,
            device.exits.load(Ordering::Relaxed),
            device.interrupts.load(Ordering::Relaxed)
        );

        // Unplug bus 1 at once: every device on it leaves the table together, and comes
        // back as a `Dying` to drain.
        let bus1 =
            devices.extract_if(|keys, _| matches!(keys[0], DevKey::Pci(pci) if pci >> 8 == 1));
        assert_eq!(bus1.len(), 4);
        for dying in bus1 {
            let device = dying.drain();
            println!("unplugged {} with bus 1", device.name);
        }
    });
    let mut left: Vec<String> = devices.iter().map(|dev| dev.name.clone()).collect();
    left.sort();
    println!("still plugged: {left:?}");
    assert_eq!(left.len(), 3);
}
