//! The command line as a user meets it: help that teaches, the demo's one-line verdict,
//! guest-view output lspci can read, and `run` failing fast and clearly without Xen.

use std::process::Command;

fn xenpt(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_xenpt")).args(args).output().expect("run xenpt");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn help_names_every_command_and_the_exit_codes() {
    let (code, out, _) = xenpt(&["--help"]);
    assert_eq!(code, 0);
    for word in ["demo", "run", "guest-view", "Exit codes", "privcmd"] {
        assert!(out.contains(word), "--help lacks {word:?}:\n{out}");
    }
    let (code, out, _) = xenpt(&["run", "--help"]);
    assert_eq!(code, 0);
    assert!(out.contains("xl pci-assignable-add") && out.contains("--ready-fd"), "{out}");
    for flag in ["--pidfile", "--no-host-bridge", "--assign", "--console", "--permissive"] {
        assert!(out.contains(flag), "run --help lacks {flag}:\n{out}");
    }
}

#[test]
fn demo_quiet_prints_one_verdict_line_and_exits_0() {
    let (code, out, _) = xenpt(&["demo", "--quiet", "--queues", "1", "--blocks", "4"]);
    assert_eq!(code, 0, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 1, "{out}");
    assert!(lines[0].starts_with("demo: PASS"), "{out}");
}

#[test]
fn bad_arguments_are_usage_errors() {
    let (code, _, err) = xenpt(&["run", "--domid", "1", "--sbdf", "not-an-sbdf"]);
    assert_eq!(code, 2);
    assert!(err.contains("SSSS:BB:DD.F"), "{err}");
    let (code, _, _) = xenpt(&["demo", "--queues", "99"]);
    assert_eq!(code, 2);
}

#[test]
fn run_without_xen_fails_fast_with_exit_3_and_says_why() {
    if std::path::Path::new("/dev/xen/privcmd").exists() {
        return; // a real dom0: the friendly failure does not apply
    }
    let t = std::time::Instant::now();
    let (code, _, err) = xenpt(&["run", "--domid", "1", "--sbdf", "0000:00:01.0"]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("/dev/xen/privcmd") && err.contains("dom0"), "{err}");
    assert!(t.elapsed().as_secs() < 5);
}

#[test]
fn guest_view_of_a_dump_decodes_with_lspci() {
    let dump = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/pci-corpus/1179_0116_xg5-nvme-ssd-controller.lspci");
    let (code, table, err) = xenpt(&["guest-view", "--dump", dump]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("[b0] MSI-X: exposed"), "{err}");
    assert!(table.lines().any(|l| l.starts_with("0x004   Command / Status") && l.contains("pass-through")), "{table}");
    let (code, out, err) = xenpt(&["guest-view", "--dump", dump, "--format", "lspci"]);
    assert_eq!(code, 0, "{err}");
    let tmp = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(tmp.path(), &out).unwrap();
    let l = Command::new("lspci").arg("-F").arg(tmp.path()).arg("-vv").output().expect("lspci");
    let text = String::from_utf8_lossy(&l.stdout);
    assert!(text.contains("Non-Volatile memory controller") && text.contains("MSI-X: Enable- Count=32"), "{text}");
    assert!(text.contains("Interrupt: pin A"), "HVM offers the host's INTx pin:\n{text}");
    // The PVH profile: no INTx (pin 0), MSI-X the same; the name line says where it came from.
    let (code, out, err) = xenpt(&["guest-view", "--dump", dump, "--format", "lspci", "--profile", "pvh"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("Pvh profile") && err.contains("(names: "), "{err}");
    std::fs::write(tmp.path(), &out).unwrap();
    let l = Command::new("lspci").arg("-F").arg(tmp.path()).arg("-vv").output().expect("lspci");
    let text = String::from_utf8_lossy(&l.stdout);
    assert!(text.contains("MSI-X: Enable- Count=32") && !text.contains("Interrupt: pin"), "{text}");
}

#[test]
fn guest_view_of_a_real_device_never_writes_it() {
    // Read-only by construction (sysfs opened read-only); this checks it runs and reports.
    let dev = std::fs::read_dir("/sys/bus/pci/devices").unwrap().filter_map(|e| e.ok()).next().unwrap();
    let sbdf = dev.file_name().to_string_lossy().to_string();
    let (code, out, err) = xenpt(&["guest-view", "--sbdf", &sbdf, "--format", "lspci"]);
    // Bridges are refused with a clear message; endpoints print a dump.
    if code == 0 {
        assert!(out.starts_with("00:04.0 "), "{out}");
    } else {
        assert!(err.contains(&sbdf), "{err}");
    }
}

/// tools/xenpt-xl-pci turns an xl.cfg pci= entry into the `xenpt run` command line.
#[test]
fn the_xl_pci_launcher_translates_pci_entries() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tools/xenpt-xl-pci");
    let run = |args: &[&str]| {
        let out = Command::new("bash").arg(script).args(args).output().expect("bash");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, err) = run(&["--dry-run", "--domain", "7", "03:00.0@0x05,permissive=1,msitranslate=1"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        out.trim(),
        "xenpt run --sbdf 0000:03:00.0 --assign --permissive --guest-slot 5 --domid 7 \
         --pidfile /run/xenpt/7-0000:03:00.0.pid --ready-fd 3"
    );
    assert!(err.contains("msitranslate= is a QEMU option"), "{err}");
    let (code, out, _) =
        run(&["--dry-run", "--domain", "7", "0000:0A:1f.7,vslot=1f,seize=1", "--", "--profile", "pvh"]);
    assert_eq!(code, Some(0));
    assert!(out.starts_with("xl pci-assignable-add 0000:0a:1f.7\n"), "{out}");
    assert!(out.contains("--guest-slot 31") && out.trim_end().ends_with("--profile pvh"), "{out}");
    for bad in ["03:00.0,bogus=1", "03:00.0,permissive=2", "3:0.0", "03:00.0@40"] {
        let (code, _, err) = run(&["--dry-run", "--domain", "7", bad]);
        assert_eq!(code, Some(2), "{bad} accepted");
        assert!(err.starts_with("xenpt-xl-pci: "), "{err}");
    }
    assert_eq!(run(&["--dry-run", "03:00.0"]).0, Some(2), "--domain is required");
}

/// `host-info` describes a function read-only; through VFIO it needs the function bound to
/// vfio-pci and says how to bind it (the machine's own devices never are).
#[test]
fn host_info_reads_a_device_and_vfio_says_how_to_bind_it() {
    let dev = std::fs::read_dir("/sys/bus/pci/devices").unwrap().filter_map(|e| e.ok()).next().unwrap();
    let sbdf = dev.file_name().to_string_lossy().to_string();
    let (code, out, err) = xenpt(&["host-info", "--sbdf", &sbdf]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with(&sbdf) && out.contains("backend: sysfs"), "{out}");
    let (code, _, err) = xenpt(&["host-info", "--sbdf", &sbdf, "--backend", "vfio"]);
    assert_eq!(code, 1);
    assert!(err.contains(&sbdf) && err.contains("not vfio-pci") && err.contains("driver_override"), "{err}");
    let (code, _, err) = xenpt(&["host-info", "--sbdf", &sbdf, "--reset"]);
    assert_eq!(code, 1);
    assert!(err.contains("--backend vfio"), "--reset needs --backend vfio: {err}");
}
