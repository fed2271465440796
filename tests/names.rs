//! The device-name database must never reach for the network at build time: the pci-ids
//! crate is used through a patched copy (third_party/pci-ids, see its XENPT-PATCH.md)
//! whose build script only reads its bundled pci.ids.

use std::path::Path;

fn read(p: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(p)).unwrap_or_else(|e| panic!("{p}: {e}"))
}

#[test]
fn the_pci_ids_build_script_starts_no_process_and_opens_no_socket() {
    let code: String = read("third_party/pci-ids/build.rs")
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    for banned in ["std::process", "Command", "curl", "wget", "TcpStream", "std::net", "http"] {
        assert!(!code.contains(banned), "third_party/pci-ids/build.rs uses {banned:?}");
    }
    assert!(code.contains("pciids/pci.ids"), "it builds from the bundled database");
}

#[test]
fn the_build_uses_the_patched_copy_not_the_registrys() {
    let lock = read("Cargo.lock");
    let entry = lock.split("[[package]]").find(|p| p.contains("name = \"pci-ids\"")).expect("pci-ids is a dependency");
    assert!(!entry.contains("source = "), "Cargo.lock takes pci-ids from a registry:\n{entry}");
    assert!(read("Cargo.toml").contains("pci-ids = { path = \"third_party/pci-ids\" }"));
}
