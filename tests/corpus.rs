//! Every device of ../shared/pci-corpus (329 real config-space dumps with `lspci -vvv`
//! reference decodings) through the register policy:
//! - bridges are refused with a clear error; every other function builds a guest view;
//! - `lspci -F` decodes each guest view cleanly, shows the host's IDs, exactly the exposed
//!   capabilities and none of the hidden ones;
//! - hammering every config register with writes of every size never panics, and the only
//!   host writes are the ones the policy allows (bus master, W1C error bits, xenpt's own
//!   start-up and MSI-X control writes).

use std::path::{Path, PathBuf};
use std::process::Command;

use xenpt::device::{DeviceError, DeviceModel, DeviceOptions};
use xenpt::host::dump::{format_dump, DumpDevice, HostWrite};
use xenpt::host::HostDevice;
use xenpt::pci::Sbdf;
use xenpt::xen::sim::Sim;
use xenpt::xen::GuestKind;
use xenpt::Profile;

fn corpus() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/pci-corpus");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e} (the corpus lives next to the project root)", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "lspci"))
        .collect();
    v.sort();
    v
}

fn opts(profile: Profile) -> DeviceOptions {
    DeviceOptions { domid: 1, guest_sbdf: Sbdf::new(0, 0, 4, 0), profile, permissive: false, read_only_host: false }
}

fn lspci(file: &Path) -> String {
    let out = Command::new("lspci")
        .arg("-F")
        .arg(file)
        .arg("-vvv")
        .arg("-n")
        .output()
        .expect("lspci (pciutils) is needed: .ci/run installs it");
    assert!(out.status.success(), "lspci -F {} failed: {}", file.display(), String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn every_corpus_device_gets_a_clean_guest_view() {
    let files = corpus();
    assert!(files.len() >= 300, "expected the 329-device corpus, found {}", files.len());
    let tmp = tempfile::tempdir().unwrap();
    let (mut built, mut bridges, mut unaligned, mut caps_exposed, mut caps_hidden) = (0, 0, 0, 0, 0);
    let (mut ext_exposed, mut ext_hidden, mut ext_null, mut ext_warnings) = (0, 0, 0, 0);
    let mut ext_by_id = std::collections::BTreeMap::new();
    for f in &files {
        let name = f.file_name().unwrap().to_string_lossy().to_string();
        let text = std::fs::read_to_string(f).unwrap();
        let dev = DumpDevice::from_text(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        let ids = dev.ids().unwrap();
        let header = dev.config_read(0x0e, 1).unwrap() & 0x7f;
        let mut dm = match DeviceModel::new(Box::new(dev), 0, opts(Profile::Hvm)) {
            Ok(d) => d,
            Err(DeviceError::NotEndpoint { .. }) => {
                assert_ne!(header, 0, "{name}: a type-0 function was refused as a bridge");
                bridges += 1;
                continue;
            }
            Err(DeviceError::UnalignedBar { base, .. }) => {
                // Refused on purpose: mapping a BAR that starts mid-page hands the guest the
                // rest of the page (another device's registers). The message tells the admin
                // to use pci=resource_alignment.
                assert_ne!(base % 4096, 0, "{name}");
                unaligned += 1;
                continue;
            }
            Err(e) => panic!("{name}: {e}"),
        };
        assert_eq!(header, 0, "{name}: a bridge was accepted");
        built += 1;
        let bytes = dm.guest_snapshot();
        let path = tmp.path().join(&name);
        std::fs::write(&path, format_dump(Sbdf::new(0, 0, 4, 0), "guest", &bytes)).unwrap();
        let out = lspci(&path);
        let ids_txt = format!(" {:04x}:{:04x}", ids.vendor, ids.device);
        assert!(out.contains(&ids_txt), "{name}: lspci does not show {ids_txt}:\n{out}");
        for bad in ["<chain looped>", "<chain broken>", "<access denied>", "<BAD>", "#ff"] {
            assert!(!out.contains(bad), "{name}: lspci reports {bad}:\n{out}");
        }
        for c in &dm.caps.caps {
            let tag = format!("Capabilities: [{:02x}]", c.offset);
            match c.hidden {
                None => {
                    caps_exposed += 1;
                    assert!(out.contains(&tag), "{name}: exposed capability {tag} missing:\n{out}");
                }
                Some(_) => {
                    caps_hidden += 1;
                    assert!(!out.contains(&tag), "{name}: hidden capability {tag} visible:\n{out}");
                }
            }
        }
        // Extended capabilities: lspci shows exactly the guest's extended chain (the
        // exposed ones, behind a Null header at 0x100 when the host's first is hidden).
        let shown: Vec<u16> = out
            .lines()
            .filter_map(|l| l.trim().strip_prefix("Capabilities: ["))
            .filter_map(|l| {
                l.split_once(" v").filter(|(o, _)| o.len() == 3 && o.chars().all(|c| c.is_ascii_hexdigit()))
            })
            .map(|(o, _)| u16::from_str_radix(o, 16).unwrap())
            .collect();
        let chain = dm.caps.guest_ext_chain();
        let want: Vec<u16> = chain.iter().map(|&(_, o)| o).collect();
        assert_eq!(shown, want, "{name}: lspci's extended capabilities are not the exposed ones:\n{out}");
        if chain.first().is_some_and(|&(id, _)| id == 0) {
            assert!(out.contains("Capabilities: [100 v0] Null"), "{name}: no Null header at 0x100:\n{out}");
            ext_null += 1;
        }
        for c in &dm.caps.ext {
            match c.hidden {
                None => ext_exposed += 1,
                Some(_) => {
                    ext_hidden += 1;
                    assert!(!want.contains(&c.offset) || c.offset == 0x100, "{name}: hidden {c:x?} in the chain");
                }
            }
            *ext_by_id.entry((c.id, c.hidden.is_none())).or_insert(0usize) += 1;
        }
        ext_warnings += dm.caps.warnings.iter().filter(|w| w.contains("extended")).count();
    }
    eprintln!(
        "corpus: {built} guest views built and decoded, {bridges} bridges refused, {unaligned} refused for a BAR that \
         starts mid-page, {caps_exposed} capabilities exposed, {caps_hidden} hidden"
    );
    let by_id: Vec<String> = ext_by_id
        .iter()
        .map(|(&(id, exposed), n)| format!("{id:#06x}{}x{n}", if exposed { "+" } else { "-" }))
        .collect();
    eprintln!(
        "corpus: extended capabilities {ext_exposed} exposed, {ext_hidden} hidden, {ext_null} Null headers at 0x100, \
         {ext_warnings} chain warnings; by id (+ exposed, - hidden): {}",
        by_id.join(" ")
    );
    assert!(ext_exposed > 0 && ext_hidden > 0, "the corpus has extended capabilities of both kinds");
    assert_eq!(built + bridges + unaligned, files.len());
    assert!(unaligned * 20 < files.len(), "{unaligned} unaligned refusals: the alignment rule is too eager");
    assert!(built > 200 && caps_exposed > 250, "{built} devices, {caps_exposed} capabilities");
}

/// Whether a host config write changed only what the policy lets reach hardware.
fn allowed(w: &HostWrite, msix_cap: Option<u16>, msi_cap: Option<u16>, pcie_cap: Option<u16>) -> bool {
    // Bits of the written bytes that changed, placed at their dword position.
    let shift = (w.offset & 3) * 8;
    let changed = (w.old ^ w.new) << shift;
    let base = w.offset & !3;
    let is = |reg: u16| base == reg & !3;
    if is(0x04) {
        // Command: bus master and INTx disable (the guest, xenpt's INTx rule) and memory/IO
        // decode (start-up only turns them on); status high half: W1C error bits. The
        // W1C bits are written as 1 to clear, so "changed" in the value written.
        return (changed & !(0x0407 | 0xf900_0000)) == 0;
    }
    if is(0x30) {
        return changed & !1 == 0; // ROM enable
    }
    if msix_cap.is_some_and(&is) {
        return changed & !0xc000_0000 == 0; // xenpt's own MSI-X Enable/Function Mask
    }
    if msi_cap.is_some_and(&is) {
        return changed & !0x0071_0000 == 0; // xenpt's own MSI Enable and Multiple Message Enable
    }
    if pcie_cap.is_some_and(|c| is(c + 8)) {
        return changed & !0x000f_0000 == 0; // PCIe Device Status: W1C error bits
    }
    false
}

#[test]
fn hammering_every_register_never_panics_and_reaches_hardware_only_through_the_policy() {
    let sim = Sim::default();
    let d = sim.create_domain(GuestKind::Hvm, 1, 4096);
    let mut x = sim.xen();
    let patterns = [0u32, !0, 0x5555_5555, 0xaaaa_aaaa, 0x8000_0001];
    let (mut devices, mut writes_checked) = (0, 0);
    for f in corpus().iter().step_by(3) {
        let name = f.file_name().unwrap().to_string_lossy().to_string();
        let text = std::fs::read_to_string(f).unwrap();
        let dev = DumpDevice::from_text(&text).unwrap();
        let log = dev.write_log();
        let o = DeviceOptions { domid: d, ..opts(Profile::Hvm) };
        let Ok(mut dm) = DeviceModel::new(Box::new(dev), 0, o) else { continue };
        devices += 1;
        let msix_cap = dm.caps.msix.map(|m| m.cap_offset);
        let msi_cap = dm.caps.caps.iter().find(|c| c.id == 0x05).map(|c| c.offset);
        let pcie_cap = dm.caps.caps.iter().find(|c| c.id == 0x10 && c.hidden.is_none()).map(|c| c.offset);
        // The conventional space, then every extended capability, exposed or hidden (no
        // write there may reach the device).
        let ext: Vec<u32> =
            dm.caps.ext.iter().flat_map(|c| c.offset as u32..(c.offset + c.len.max(4)) as u32).collect();
        for off in (0..0x100u32).chain(ext) {
            for size in [1u32, 2, 4] {
                for &p in &patterns {
                    dm.config_write(&mut x, off, size, p);
                    let _ = dm.config_read(off, size);
                }
            }
        }
        for w in log.lock().unwrap().iter() {
            assert!(
                allowed(w, msix_cap, msi_cap, pcie_cap),
                "{name}: host write {w:x?} changes bits the policy does not pass through"
            );
            writes_checked += 1;
        }
        dm.teardown(&mut x);
    }
    eprintln!("hammer: {devices} devices, {writes_checked} host writes checked");
    assert!(devices > 50 && writes_checked > 0);
}
