//! Property tests of the config-space policy on real devices: random access sequences
//! (every size, aligned or not, in and out of range, biased towards the registers of the
//! device's capabilities and towards all-ones, all-zeros, single-bit and pointer-shaped
//! values) against DeviceModels built from ../shared/pci-corpus dumps, in both profiles.
//! The invariants checked after every step (read-only bits never change, only
//! pass-through bits reach the device, the capability chain never loops or leaves
//! 0x40..0xff) are in support/config_invariants.rs, shared with the fuzz target.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use proptest::prelude::*;
use proptest::test_runner::Config as ProptestConfig;
use xenpt::device::DeviceModel;
use xenpt::host::dump::DumpDevice;
use xenpt::Profile;

#[path = "support/config_invariants.rs"]
mod invariants;

use invariants::{opts, run, run_fuzz_input, usable_corpus, Op};

/// One corpus device that builds a DeviceModel, with the offsets worth aiming at.
struct Dev {
    name: String,
    text: String,
    regs: Vec<u32>,
}

/// Every corpus device xenpt accepts, in the fuzz target's order.
fn devices() -> &'static [Dev] {
    static DEVICES: OnceLock<Vec<Dev>> = OnceLock::new();
    DEVICES.get_or_init(|| {
        let out: Vec<Dev> = usable_corpus(&corpus_dir())
            .into_iter()
            .map(|(name, text)| {
                let dm = DeviceModel::new(Box::new(DumpDevice::from_text(&text).unwrap()), 0, opts(1, Profile::Hvm));
                // The header's side-effecting registers and every byte of every capability
                // (exposed or hidden: a hidden one must stay hidden).
                let mut regs: Vec<u32> = vec![0x04, 0x06, 0x0c, 0x10, 0x14, 0x18, 0x1c, 0x20, 0x24, 0x30, 0x34, 0x3c];
                let dm = dm.unwrap();
                for c in &dm.caps.caps {
                    regs.extend((c.offset as u32..(c.offset + c.len.max(4)) as u32).filter(|o| *o < 0x100));
                }
                for c in &dm.caps.ext {
                    regs.extend(c.offset as u32..(c.offset + c.len.max(4)) as u32);
                }
                Dev { name, text, regs }
            })
            .collect();
        assert!(out.len() > 200, "expected the corpus' 250-odd usable devices, found {}", out.len());
        out
    })
}

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/pci-corpus")
}

fn value() -> impl Strategy<Value = u32> {
    prop_oneof![
        3 => any::<u32>(),
        2 => Just(!0u32),
        2 => Just(0u32),
        2 => (0..32u32).prop_map(|b| 1 << b),
        1 => (0..32u32).prop_map(|b| !(1 << b)),
        // Capability-pointer shaped bytes, in every lane: pointers into the header, to
        // themselves, unaligned, past the end.
        1 => (prop::sample::select(vec![0u32, 0x04, 0x34, 0x40, 0x41, 0x50, 0xfc, 0xfe, 0xff]), 0..4u32)
            .prop_map(|(p, lane)| p << (8 * lane)),
    ]
}

fn shape(regs: Vec<u32>) -> impl Strategy<Value = (u32, u32)> {
    let size = prop_oneof![6 => prop::sample::select(vec![1u32, 2, 4]), 1 => prop::sample::select(vec![0u32, 3, 8])];
    let off = prop_oneof![
        4 => prop::sample::select(regs),
        3 => 0..0x100u32,
        1 => 0x100..0x1010u32,
        1 => prop::sample::select(vec![u32::MAX, u32::MAX - 1, 0xfff, 0xffe, 0xff]),
    ];
    // Mostly naturally aligned accesses (what guests do), sometimes as drawn.
    (off, size, 0..4u32)
        .prop_map(|(off, size, k)| if k > 0 && size != 0 { (off & !(size - 1), size) } else { (off, size) })
}

fn ops(regs: Vec<u32>) -> impl Strategy<Value = Vec<Op>> {
    let op = prop_oneof![
        1 => shape(regs.clone()).prop_map(|(off, size)| Op::Read { off, size }),
        4 => (shape(regs), value()).prop_map(|((off, size), value)| Op::Write { off, size, value }),
    ];
    prop::collection::vec(op, 1..64)
}

fn case() -> impl Strategy<Value = (usize, Profile, Vec<Op>)> {
    (0..devices().len(), prop::bool::ANY).prop_flat_map(|(i, pvh)| {
        let profile = if pvh { Profile::Pvh } else { Profile::Hvm };
        (Just(i), Just(profile), ops(devices()[i].regs.clone()))
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, failure_persistence: None, ..ProptestConfig::default() })]

    /// Random access sequences against random corpus devices in both profiles keep every
    /// invariant of support/config_invariants.rs.
    #[test]
    fn random_access_sequences_keep_the_config_space_policy((i, profile, ops) in case()) {
        let dev = &devices()[i];
        match run(&dev.text, profile, &ops) {
            Ok(Some(_)) => {}
            Ok(None) => return Err(TestCaseError::fail(format!("{}: refused in {profile:?}", dev.name))),
            Err(e) => return Err(TestCaseError::fail(format!("{} ({profile:?}): {e}", dev.name))),
        }
    }
}

/// The same invariants on hand-picked devices with long sequences and a fixed seed:
/// Intel 82576 (MSI-X, I/O BAR, ROM), MegaRAID 3108 (MSI with per-vector masks, MSI-X,
/// 64-bit BARs, ROM), Toshiba XG5 NVMe (MSI with masks, MSI-X, PCIe v2), Intel 82545EM
/// (conventional PCI: PM, PCI-X, I/O BAR), RTL8125 (VPD, MSI, MSI-X, PCIe), virtio-net
/// (vendor-specific capabilities).
#[test]
fn long_sequences_on_hand_picked_devices() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::{RngAlgorithm, TestRng, TestRunner};
    let picks = ["8086_10c9_", "1000_005d_", "1179_0116_", "8086_100f_", "10ec_8125_", "1af4_1041_"];
    let (mut ran, mut writes, mut host_writes, mut control_writes) = (0, 0, 0, 0);
    for prefix in picks {
        let dev =
            devices().iter().find(|d| d.name.starts_with(prefix)).unwrap_or_else(|| panic!("{prefix}* not usable"));
        let mut runner =
            TestRunner::new_with_rng(ProptestConfig::default(), TestRng::from_seed(RngAlgorithm::ChaCha, &[7; 32]));
        for _ in 0..20 {
            // About 250 accesses per sequence.
            let seq = prop::collection::vec(ops(dev.regs.clone()), 8).new_tree(&mut runner).unwrap().current().concat();
            let stats = run(&dev.text, Profile::Hvm, &seq)
                .unwrap_or_else(|e| panic!("{}: {e}", dev.name))
                .unwrap_or_else(|| panic!("{}: refused", dev.name));
            writes += stats.guest_writes;
            host_writes += stats.host_writes.values().sum::<usize>();
            control_writes += stats.control_writes;
        }
        ran += 1;
    }
    eprintln!(
        "hand-picked: {ran} devices, {writes} guest writes, {host_writes} host writes checked \
         ({control_writes} of them xenpt's MSI/MSI-X control writes)"
    );
    assert!(host_writes > 100, "{host_writes} host writes: the host-write invariant was hardly exercised");
    assert!(control_writes > 10, "{control_writes} MSI/MSI-X control writes: xenpt's own writes were hardly checked");
}

/// The fuzz target's committed seeds (and any crash input saved next to them) replayed
/// through the same decoder and invariants, so the normal test run keeps them passing.
#[test]
fn fuzz_seeds_replay_clean() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/config_space");
    let texts: Vec<&str> = devices().iter().map(|d| d.text.as_str()).collect();
    let mut seeds: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("seed-")))
        .collect();
    seeds.sort();
    assert!(seeds.len() >= 5, "{} seeds in {}", seeds.len(), dir.display());
    let (mut host_writes, mut control_writes) = (0, 0);
    for s in &seeds {
        let data = std::fs::read(s).unwrap();
        let stats = run_fuzz_input(&texts, &data)
            .unwrap_or_else(|e| panic!("{}: {e}", s.display()))
            .unwrap_or_else(|| panic!("{}: device refused or input too short", s.display()));
        assert!(stats.guest_writes > 0, "{}: no guest write", s.display());
        host_writes += stats.host_writes.values().sum::<usize>();
        control_writes += stats.control_writes;
    }
    assert!(
        host_writes > 0 && control_writes > 0,
        "seeds reach the host ({host_writes}) and MSI/MSI-X ({control_writes})"
    );
}
