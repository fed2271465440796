//! The device-name database must cost nothing until a name is needed: xenpt embeds
//! pci.ids as text (third_party/pci-ids/README.md), not as pointer-laden tables that the
//! loader relocates into every process's memory at start-up. And no build step may fetch
//! anything from the network.

use std::path::Path;

fn le(b: &[u8], off: usize, n: usize) -> u64 {
    b[off..off + n].iter().rev().fold(0, |a, &x| a << 8 | x as u64)
}

/// Size of the named section of a 64-bit little-endian ELF file.
fn elf_section_size(elf: &[u8], name: &str) -> Option<u64> {
    assert_eq!(&elf[..6], b"\x7fELF\x02\x01", "a 64-bit little-endian ELF");
    let (shoff, shentsize, shnum, shstrndx) =
        (le(elf, 0x28, 8) as usize, le(elf, 0x3a, 2) as usize, le(elf, 0x3c, 2) as usize, le(elf, 0x3e, 2) as usize);
    let sh = |i: usize| shoff + i * shentsize;
    let strtab = le(elf, sh(shstrndx) + 0x18, 8) as usize;
    (0..shnum).find_map(|i| {
        let n = strtab + le(elf, sh(i), 4) as usize;
        let end = n + elf[n..].iter().position(|&c| c == 0)?;
        (&elf[n..end] == name.as_bytes()).then(|| le(elf, sh(i) + 0x20, 8))
    })
}

#[test]
fn the_binary_carries_no_large_relocated_tables() {
    let elf = std::fs::read(env!("CARGO_BIN_EXE_xenpt")).unwrap();
    let relro = elf_section_size(&elf, ".data.rel.ro").unwrap_or(0);
    let rodata = elf_section_size(&elf, ".rodata").expect("a .rodata section");
    // Everything in .data.rel.ro is written by the loader at start-up, so it is resident
    // in every xenpt process. The pci-ids crate's tables alone were 1.5 MB.
    assert!(relro < 256 << 10, ".data.rel.ro is {relro} bytes: something embeds pointer tables again");
    assert!(rodata > 1_500_000, "the embedded pci.ids ({rodata} bytes of .rodata) is plain read-only data");
}

#[test]
fn no_build_step_can_download() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    assert!(!root.join("build.rs").exists(), "xenpt has no build script");
    let lock = std::fs::read_to_string(root.join("Cargo.lock")).unwrap();
    assert!(!lock.contains("name = \"pci-ids\""), "the pci-ids crate (its build script runs curl) is back");
}
