//! Fuzz the guest-visible config space: arbitrary bytes pick a real device from
//! ../shared/pci-corpus, optionally corrupt its host config space, and drive a sequence of
//! guest config accesses into a DeviceModel on the Xen simulator. Every step is checked
//! with the invariants of tests/support/config_invariants.rs (no panic, read-only bits
//! unchanged, only pass-through bits reach the host, the capability chain stays well
//! formed). Input layout: see fuzz/README.md; the decoding lives next to the invariants
//! so tests/config_props.rs replays the committed seeds in the normal test run.

#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

#[path = "../../tests/support/config_invariants.rs"]
mod invariants;

use invariants::{run_fuzz_input, usable_corpus};

/// Dump texts of the corpus devices xenpt accepts, sorted by file name.
fn devices() -> &'static [&'static str] {
    static DEVICES: OnceLock<Vec<&'static str>> = OnceLock::new();
    DEVICES.get_or_init(|| {
        let dir = std::env::var_os("XENPT_PCI_CORPUS")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/pci-corpus"));
        let texts: Vec<&'static str> = usable_corpus(&dir).into_iter().map(|(_, t)| &*t.leak()).collect();
        assert!(!texts.is_empty(), "no usable device in {} (set XENPT_PCI_CORPUS)", dir.display());
        texts
    })
}

fuzz_target!(|data: &[u8]| {
    if let Err(e) = run_fuzz_input(devices(), data) {
        panic!("{e}");
    }
});
