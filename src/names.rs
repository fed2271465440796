//! Human names for PCI IDs, as `lspci` prints them ("Non-Volatile memory controller:
//! Samsung Electronics Co Ltd NVMe SSD Controller PM9A1/PM9A3/980PRO").
//!
//! Two sources, looked up lazily and only when a name is asked for:
//! 1. the system's pci.ids (`/usr/share/misc/pci.ids` and its usual other homes), which
//!    distributions keep newer than any copy built into a binary. It is streamed line by
//!    line and never held in memory;
//! 2. a copy of the database embedded in the binary as plain text (third_party/pci-ids,
//!    version 2025.07.11), scanned the same way, for IDs the system file lacks or when
//!    there is none.
//!
//! Why text and not the `pci-ids` crate's typed tables: those are ~1.5 MB of pointers
//! (`&'static str` in every entry), which the loader relocates at start-up in a
//! position-independent executable, so every xenpt process paid ~2.3 MiB of resident
//! memory for them before naming anything (measured on real Xen: 5.6 MiB instead of
//! 3.3 MiB). Embedded text has no relocations: its pages stay on disk until a lookup
//! actually falls back to it. `tests/names.rs` guards the binary's relocated data size.
//!
//! The answer says which source named the device, so a console user can tell a stale
//! database from an unknown device.

use std::fs::File;
use std::io::{BufRead, BufReader};

/// The embedded database: pci.ids 2025.07.11, as bundled with the pci-ids 0.2.6 crate.
static EMBEDDED: &[u8] = include_bytes!("../third_party/pci-ids/pciids/pci.ids");
/// How [`Names::source`] names the embedded database.
pub const EMBEDDED_NAME: &str = "embedded pci.ids 2025.07.11";
use std::path::{Path, PathBuf};

use crate::host::HostIds;

/// Where distributions install pci.ids, in the order pciutils looks.
pub const SYSTEM_PATHS: [&str; 3] = ["/usr/share/misc/pci.ids", "/usr/share/hwdata/pci.ids", "/usr/share/pci.ids"];

/// The names found for one function. `None` where no database knows the ID.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Names {
    pub vendor: Option<String>,
    pub device: Option<String>,
    pub subsystem: Option<String>,
    /// The class as lspci names it in its one-line summary: subclass, else base class.
    pub class: Option<String>,
    /// The programming interface's name ("NVM Express"), lspci's "prog-if 02 [...]".
    pub prog_if: Option<String>,
    /// Which database answered ("/usr/share/misc/pci.ids", EMBEDDED_NAME, ...).
    pub source: String,
}

impl Names {
    /// `lspci`'s one-line description: "Class: Vendor Device", with the numeric IDs
    /// standing in for unknown names the way lspci does ("Device 1234:5678").
    pub fn describe(&self, ids: &HostIds) -> String {
        let class = self.class.clone().unwrap_or_else(|| format!("Class {:04x}", ids.class >> 8));
        let what = match (&self.vendor, &self.device) {
            (Some(v), Some(d)) => format!("{v} {d}"),
            (Some(v), None) => format!("{v} Device {:04x}", ids.device),
            _ => format!("Device {:04x}:{:04x}", ids.vendor, ids.device),
        };
        format!("{class}: {what}")
    }
}

/// Looks the function's IDs up: the system database first, the embedded one for whatever
/// that did not name.
pub fn lookup(ids: &HostIds) -> Names {
    lookup_with(ids, system_database().as_deref())
}

/// [`lookup`] with an explicit system database (`None`: embedded only).
pub fn lookup_with(ids: &HostIds, system: Option<&Path>) -> Names {
    let mut names = Names::default();
    let mut sources = Vec::new();
    if let Some(path) = system {
        let found = File::open(path).and_then(|f| scan(BufReader::with_capacity(16 << 10, f), ids, true));
        if let Ok(found) = found {
            if found.vendor.is_some() || found.class.is_some() {
                sources.push(path.display().to_string());
            }
            names = found;
        }
    }
    // The embedded copy only for what the one-line description needs (a subsystem the
    // system file does not know is not worth paging in the older copy). The class section
    // is at the end of the file: read that far only when the class is missing.
    if names.vendor.is_none() || names.device.is_none() || names.class.is_none() {
        // In-memory data: reading it cannot fail.
        let embedded = scan(EMBEDDED, ids, names.class.is_none()).unwrap_or_default();
        let before = names.clone();
        fill(&mut names.vendor, embedded.vendor);
        fill(&mut names.device, embedded.device);
        fill(&mut names.subsystem, embedded.subsystem);
        fill(&mut names.class, embedded.class);
        fill(&mut names.prog_if, embedded.prog_if);
        if names != before {
            sources.push(EMBEDDED_NAME.into());
        }
    }
    names.source = if sources.is_empty() { "no database knows these IDs".into() } else { sources.join(" + ") };
    names
}

fn fill(slot: &mut Option<String>, from: Option<String>) {
    if slot.is_none() {
        *slot = from;
    }
}

fn class_parts(class: u32) -> (u8, u8, u8) {
    ((class >> 16) as u8, (class >> 8) as u8, class as u8)
}

/// One pass over a pci.ids database. Vendors come first (`vvvv  name`, devices one tab in,
/// subsystems two tabs in), classes at the end (`C cc  name`, subclasses one tab in,
/// prog-ifs two tabs in). The pass stops as soon as everything has been found.
fn scan(reader: impl BufRead, ids: &HostIds, want_class: bool) -> std::io::Result<Names> {
    let (base, sub, pi) = class_parts(ids.class);
    let mut names = Names::default();
    // Which section the previous lines put us in.
    let mut in_vendor = false;
    let mut in_device = false;
    let mut in_class = false;
    let mut in_subclass = false;
    let mut subclass = None;
    let mut base_name = None;
    let mut line = Vec::new();
    let mut reader = reader;
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        let Ok(text) = std::str::from_utf8(&line) else { continue };
        let text = text.trim_end_matches(['\n', '\r']);
        if text.is_empty() || text.starts_with('#') {
            continue;
        }
        let tabs = text.bytes().take_while(|&b| b == b'\t').count();
        let body = &text[tabs..];
        match tabs {
            0 if body.starts_with("C ") => {
                if in_class {
                    break; // the class we wanted has ended
                }
                in_vendor = false;
                in_device = false;
                in_class = hex_field(&body[2..]).is_some_and(|(id, name)| {
                    let hit = id == u32::from(base);
                    if hit {
                        base_name = Some(name.to_string());
                    }
                    hit
                });
                in_subclass = false;
            }
            0 => {
                if in_vendor {
                    // Our vendor's block is over; classes are still ahead.
                    if !want_class {
                        break;
                    }
                    in_vendor = false;
                    in_device = false;
                    continue;
                }
                if names.vendor.is_none() {
                    if let Some((id, name)) = hex_field(body) {
                        if id == u32::from(ids.vendor) {
                            names.vendor = Some(name.to_string());
                            in_vendor = true;
                        } else if id > u32::from(ids.vendor) && !want_class {
                            break; // vendors are sorted: ours is not in this file
                        }
                    }
                }
            }
            1 if in_vendor => {
                in_device = false;
                if let Some((id, name)) = hex_field(body) {
                    if id == u32::from(ids.device) {
                        names.device = Some(name.to_string());
                        in_device = true;
                    }
                }
            }
            2 if in_device => {
                // "ssss dddd  name"
                let mut parts = body.splitn(2, ' ');
                let sv = parts.next().and_then(|s| u16::from_str_radix(s, 16).ok());
                if let (Some(sv), Some(rest)) = (sv, parts.next()) {
                    if let Some((sd, name)) = hex_field(rest) {
                        if sv == ids.subsys_vendor && sd == u32::from(ids.subsys_device) {
                            names.subsystem = Some(name.to_string());
                        }
                    }
                }
            }
            1 if in_class => {
                in_subclass = hex_field(body).is_some_and(|(id, name)| {
                    let hit = id == u32::from(sub);
                    if hit {
                        subclass = Some(name.to_string());
                    }
                    hit
                });
            }
            2 if in_subclass => {
                if let Some((id, name)) = hex_field(body) {
                    if id == u32::from(pi) {
                        names.prog_if = Some(name.to_string());
                    }
                }
            }
            _ => {}
        }
    }
    if names.class.is_none() {
        names.class = subclass.or(base_name);
    }
    Ok(names)
}

/// "1b36  Red Hat, Inc." -> (0x1b36, "Red Hat, Inc.").
fn hex_field(s: &str) -> Option<(u32, &str)> {
    let (id, name) = s.split_once(' ')?;
    let id = u32::from_str_radix(id, 16).ok()?;
    Some((id, name.trim_start()))
}

/// The system database that [`lookup`] would read, if any (for status lines).
pub fn system_database() -> Option<PathBuf> {
    SYSTEM_PATHS.iter().map(PathBuf::from).find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn ids(vendor: u16, device: u16, sv: u16, sd: u16, class: u32) -> HostIds {
        HostIds { vendor, device, subsys_vendor: sv, subsys_device: sd, class, revision: 0 }
    }

    const MINI: &str = "\
# a comment
1234  Acme Widgets
\t5678  Widget Controller
\t\t1234 0001  Widget Controller (OEM board)
\t9999  Other Widget
1b36  Red Hat, Inc. (system copy)
\t0010  QEMU NVM Express Controller (system copy)
C 01  Mass storage controller
\t08  Non-Volatile memory controller
\t\t02  NVM Express
C 02  Network controller
\t00  Ethernet controller
";

    fn mini() -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(MINI.as_bytes()).unwrap();
        f
    }

    #[test]
    fn the_system_file_names_vendor_device_subsystem_and_prog_if() {
        let f = mini();
        let n = lookup_with(&ids(0x1234, 0x5678, 0x1234, 0x0001, 0x010802), Some(f.path()));
        assert_eq!(n.vendor.as_deref(), Some("Acme Widgets"));
        assert_eq!(n.device.as_deref(), Some("Widget Controller"));
        assert_eq!(n.subsystem.as_deref(), Some("Widget Controller (OEM board)"));
        assert_eq!(n.class.as_deref(), Some("Non-Volatile memory controller"));
        assert_eq!(n.prog_if.as_deref(), Some("NVM Express"));
        assert_eq!(n.source, f.path().display().to_string(), "nothing needed the embedded copy");
        assert_eq!(
            n.describe(&ids(0x1234, 0x5678, 0, 0, 0x010802)),
            "Non-Volatile memory controller: Acme Widgets Widget Controller"
        );
    }

    #[test]
    fn the_system_file_wins_over_the_embedded_database() {
        let f = mini();
        let n = lookup_with(&ids(0x1b36, 0x0010, 0x1af4, 0x1100, 0x010802), Some(f.path()));
        assert_eq!(n.vendor.as_deref(), Some("Red Hat, Inc. (system copy)"));
        assert_eq!(n.device.as_deref(), Some("QEMU NVM Express Controller (system copy)"));
        // The mini file has no such subsystem: the embedded database fills it in if it
        // knows it, and the source then names both.
        if n.subsystem.is_some() {
            assert!(n.source.contains("embedded"), "{}", n.source);
        }
    }

    #[test]
    fn ids_the_system_file_lacks_come_from_the_embedded_database() {
        let f = mini();
        // Intel 82574L: not in the mini file, certainly in the embedded one.
        let n = lookup_with(&ids(0x8086, 0x10d3, 0, 0, 0x020000), Some(f.path()));
        assert_eq!(n.vendor.as_deref(), Some("Intel Corporation"));
        assert_eq!(n.device.as_deref(), Some("82574L Gigabit Network Connection"));
        assert_eq!(n.class.as_deref(), Some("Ethernet controller"), "class from the system file");
        assert!(n.source.contains("embedded") && n.source.contains(&f.path().display().to_string()), "{}", n.source);
    }

    #[test]
    fn unknown_ids_read_like_lspci() {
        let n = lookup_with(&ids(0x0bad, 0x1234, 0, 0, 0xff0000), None);
        assert_eq!(n.vendor, None);
        assert_eq!(n.describe(&ids(0x0bad, 0x1234, 0, 0, 0xff0000)), "Unassigned class: Device 0bad:1234");
        let f = mini();
        let n = lookup_with(&ids(0x1234, 0xabcd, 0, 0, 0xfe0100), Some(f.path()));
        assert_eq!(n.describe(&ids(0x1234, 0xabcd, 0, 0, 0xfe0100)), "Class fe01: Acme Widgets Device abcd");
        assert_eq!(n.source, f.path().display().to_string());
    }

    #[test]
    fn a_missing_or_garbled_system_file_falls_back() {
        let n = lookup_with(&ids(0x1b36, 0x0010, 0, 0, 0x010802), Some(Path::new("/nonexistent/pci.ids")));
        assert_eq!(n.vendor.as_deref(), Some("Red Hat, Inc."));
        assert_eq!(n.source, EMBEDDED_NAME);
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(b"\xff\xfe garbage\n\t\t\tzz\nC zz\n\t\t 1\n").unwrap();
        let n = lookup_with(&ids(0x1b36, 0x0010, 0, 0, 0x010802), Some(f.path()));
        assert_eq!(n.device.as_deref(), Some("QEMU NVM Express Controller"));
    }

    #[test]
    fn the_machines_own_database_agrees_on_a_well_known_device() {
        // Installed by .ci/run (pciutils depends on pci.ids); a missing file is a failure,
        // not a skip, because then this test would prove nothing.
        let path = system_database().expect("no system pci.ids: install pciutils (.ci/run does)");
        let n = lookup_with(&ids(0x8086, 0x10d3, 0, 0, 0x020000), Some(&path));
        assert_eq!(n.vendor.as_deref(), Some("Intel Corporation"));
        assert_eq!(n.source, path.display().to_string(), "the system file alone named it");
    }
}
