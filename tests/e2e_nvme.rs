//! End to end: a simulated HVM guest uses the emulated NVMe controller through xenpt on
//! the simulated Xen; the exact sequence of Xen operations xenpt performs is asserted.

use std::time::Duration;

use xenpt::demo::{self, DemoOptions, GuestFlavour, IrqMode};
use xenpt::Profile;

fn quiet(io_queues: u16, blocks: u32) -> DemoOptions {
    DemoOptions {
        profile: Profile::Hvm,
        io_queues,
        blocks,
        irq: IrqMode::Msix,
        guest: GuestFlavour::Linux,
        verbose: false,
    }
}

#[test]
fn nvme_data_round_trips_with_the_exact_xen_operation_sequence() {
    let r = demo::run(&quiet(2, 64));
    assert!(r.ok, "{}\n{}", demo::summary(&r), r.transcript.join("\n"));
    assert_eq!(r.bytes_verified, 2 * 64 * 512);
    assert_eq!(r.nvme.blocks_written, 128);
    assert_eq!(r.nvme.blocks_read, 128);
    assert_eq!(r.nvme.dma_errors, 0);

    let ops: Vec<String> = r.ops.iter().map(|o| o.to_string()).collect();
    let table = |e: u16, p: u32, v: u8| {
        [
            format!("map_pirq(d1, MSI-X 0000:03:00.0 entry {e} table_base 0xfe000000)"),
            format!("bind_pt_irq(d1, MSI pirq {p} gvec {v:#x} gflags 0x0 gtable 0xf0002000)"),
        ]
    };
    let mut want: Vec<String> = vec![
        "domain_info(d1)".into(),
        "create_ioreq_server(d1, Off)".into(),
        "map_ioreq_pages(d1, server 0)".into(),
        // INTx: the host's GSI (a PV dom0's sysfs irq; xenpt asks what dom0 is) mapped
        // into the guest and bound to guest slot 4, pin A.
        "domain_info(d0)".into(),
        "map_pirq(d1, GSI 11 pirq 11)".into(),
        "bind_pt_irq(d1, INTx pirq 11 -> 00:04 INTA)".into(),
        "map_io_range(d1, Pci 0x20-0x20)".into(),
        "set_ioreq_server_state(d1, server 0 enabled=true)".into(),
        "evtchn_bind_interdomain(d1, remote port 1)".into(),
        // Decode on: BAR0 direct-mapped except the MSI-X table/PBA pages, which are trapped.
        "memory_mapping(d1, gfn 0xf0000 mfn 0xfe000 nr 2 add)".into(),
        "map_io_range(d1, Memory 0xf0002000-0xf0003fff)".into(),
    ];
    // MSI-X enabled: every written entry mapped and bound masked (UNMASKED clear); the
    // guest's unmasks then go through Xen's msixtbl and never reach xenpt.
    for (e, v) in [(0u16, 0x40u8), (1, 0x41), (2, 0x42)] {
        want.extend(table(e, 55 + e as u32, v));
    }
    // Teardown: unbind every vector, unmap every pirq, unmap the BAR, destroy the server.
    for (p, v) in [(55u32, 0x40u8), (56, 0x41), (57, 0x42)] {
        want.push(format!("unbind_pt_irq(d1, MSI pirq {p} gvec {v:#x} gflags 0x0 gtable 0xf0002000)"));
    }
    want.push("unbind_pt_irq(d1, INTx pirq 11 -> 00:04 INTA)".into());
    for p in 55..=57 {
        want.push(format!("unmap_pirq(d1, pirq {p})"));
    }
    want.push("unmap_pirq(d1, pirq 11)".into());
    want.extend([
        "unmap_io_range(d1, Memory 0xf0002000-0xf0003fff)".to_string(),
        "memory_mapping(d1, gfn 0xf0000 mfn 0xfe000 nr 2 remove)".into(),
        "set_ioreq_server_state(d1, server 0 enabled=false)".into(),
        "destroy_ioreq_server(d1, server 0)".into(),
        "evtchn_unbind(d0, port 1)".into(),
    ]);
    assert_eq!(ops, want);

    // Every completion arrived by interrupt on the vector programmed for its queue:
    // 6 admin commands on entry 0, then a write and a read on each I/O queue.
    assert_eq!(r.expected_vectors, vec![0x40, 0x41, 0x42]);
    assert_eq!(r.interrupts, vec![0x40u32, 0x40, 0x40, 0x40, 0x40, 0x40, 0x41, 0x41, 0x42, 0x42]);
    assert_eq!(r.nvme.interrupts, 10);
}

#[test]
fn each_of_many_queues_completes_on_its_own_vector() {
    let r = demo::run(&quiet(8, 8));
    assert!(r.ok, "{}", demo::summary(&r));
    for q in 1..=8u32 {
        let v = 0x40 + q;
        assert_eq!(r.interrupts.iter().filter(|&&x| x == v).count(), 2, "queue {q} on vector {v:#x}");
    }
    let binds = r.ops.iter().filter(|o| o.kind == "bind_pt_irq").count();
    assert_eq!(binds, 1 + 9, "the INTx line at start-up, then one bind per programmed entry, no re-binds");
}

#[test]
fn large_transfers_use_prp_lists() {
    let r = demo::run(&quiet(1, 256));
    assert!(r.ok, "{}", demo::summary(&r));
    assert_eq!(r.bytes_verified, 256 * 512);
}

#[test]
fn summary_line_says_pass() {
    let r = demo::run(&quiet(1, 1));
    assert!(demo::summary(&r).starts_with("demo: PASS"));
}

#[test]
fn queues_1_2_and_32_each_complete_on_their_own_vector() {
    for queues in [1u16, 2, 32] {
        let o = DemoOptions { io_queues: queues, ..quiet(queues, 2) };
        // 32 I/O queues need 33 MSI-X entries: the emulated controller has 64.
        let r = demo::run(&o);
        assert!(r.ok, "{queues} queues: {}", demo::summary(&r));
        for q in 1..=queues as u32 {
            assert_eq!(r.interrupts.iter().filter(|&&x| x == 0x40 + q).count(), 2, "{queues} queues: queue {q}");
        }
    }
}

#[test]
fn multi_vector_msi_maps_a_block_and_binds_base_or_i() {
    let o = DemoOptions { irq: IrqMode::Msi, ..quiet(3, 8) };
    let r = demo::run(&o);
    assert!(r.ok, "{}\n{}", demo::summary(&r), r.transcript.join("\n"));
    let ops: Vec<String> = r.ops.iter().map(|o| o.to_string()).collect();
    let i = ops.iter().position(|o| o.starts_with("map_pirq(d1, multi-MSI")).unwrap();
    assert_eq!(ops[i], "map_pirq(d1, multi-MSI 0000:03:00.0 x4)");
    for v in 0..4u32 {
        assert_eq!(
            ops[i + 1 + v as usize],
            format!("bind_pt_irq(d1, MSI pirq {} gvec {:#x} gflags 0x10000 gtable 0x0)", 55 + v, 0x40 + v)
        );
    }
    for q in 1..=3u32 {
        assert_eq!(r.interrupts.iter().filter(|&&x| x == 0x40 + q).count(), 2, "queue {q}");
    }
    assert!(
        ops.iter().filter(|o| o.starts_with("unmap_pirq")).count() == 4 + 1,
        "teardown unmaps the block and the INTx GSI"
    );
}

#[test]
fn a_masked_msi_vector_holds_its_interrupt_until_unmasked() {
    let o = DemoOptions { irq: IrqMode::Msi, ..quiet(2, 1) };
    let mut flow = |os: &mut demo::guest_os::GuestOs, o: &DemoOptions, _r: &mut demo::DemoReport| {
        demo::bring_up(os, o)?;
        let buf = os.alloc(4096);
        os.msi_mask(1, true)?;
        os.start_read(1, 0, buf)?;
        // Masked: the completion is posted but no interrupt arrives.
        assert_eq!(os.g.wait_interrupt(0, Duration::from_millis(200))?, None, "masked vector delivered");
        os.msi_mask(1, false)?;
        os.finish_read(1)
    };
    let r = demo::run_with(&o, &mut flow);
    assert!(r.ok, "{}\n{}", demo::summary(&r), r.transcript.join("\n"));
    let ops: Vec<String> = r.ops.iter().map(|o| o.to_string()).collect();
    let unbind = ops
        .iter()
        .position(|o| o == "unbind_pt_irq(d1, MSI pirq 56 gvec 0x41 gflags 0x0 gtable 0x0)")
        .expect("mask unbinds");
    let rebind = ops
        .iter()
        .position(|o| o == "bind_pt_irq(d1, MSI pirq 56 gvec 0x41 gflags 0x10000 gtable 0x0)")
        .expect("bound at enable");
    let unmask =
        ops.iter().rposition(|o| o == "bind_pt_irq(d1, MSI pirq 56 gvec 0x41 gflags 0x10000 gtable 0x0)").unwrap();
    assert!(rebind < unbind && unbind < unmask, "enable bind, mask unbind, unmask bind: {ops:#?}");
    assert!(!ops[unbind..unmask].iter().any(|o| o.starts_with("unmap_pirq")), "masking never unmaps the pirq");
}

#[test]
fn pv_on_hvm_guest_gets_the_pirqs_it_asked_for_and_takes_event_channel_interrupts() {
    let o = DemoOptions { guest: GuestFlavour::PvOnHvm, ..quiet(2, 4) };
    let r = demo::run(&o);
    assert!(r.ok, "{}\n{}", demo::summary(&r), r.transcript.join("\n"));
    let ops: Vec<String> = r.ops.iter().map(|o| o.to_string()).collect();
    for (e, p) in [(0u32, 55u32), (1, 56), (2, 57)] {
        assert!(
            ops.contains(&format!("map_pirq(d1, MSI-X 0000:03:00.0 entry {e} table_base 0xfe000000 pirq {p})")),
            "{ops:#?}"
        );
        assert!(
            ops.contains(&format!("bind_pt_irq(d1, MSI pirq {p} gvec 0x0 gflags {:#x} gtable 0xf0002000)", p & 0xff))
        );
    }
    assert_eq!(r.expected_vectors, vec![55, 56, 57]);
    assert_eq!(r.interrupts.iter().filter(|&&p| p == 56).count(), 2, "queue 1's completions on its pirq's event");
}

#[test]
fn msi_that_xen_refuses_stays_disabled_and_the_device_keeps_working() {
    let o = DemoOptions { irq: IrqMode::Msi, ..quiet(1, 1) };
    let mut flow = |os: &mut demo::guest_os::GuestOs, o: &DemoOptions, _r: &mut demo::DemoReport| {
        os.g.sim().fail_nth("map_pirq", 1, xenpt::xen::Errno::ENOSPC);
        match demo::bring_up(os, o) {
            Err(e) => assert!(e.to_string().contains("MSI did not stay enabled"), "{e}"),
            Ok(_) => panic!("MSI enabled although map_pirq failed"),
        }
        // The guest falls back to MSI-X, which works.
        let o2 = DemoOptions { irq: IrqMode::Msix, ..o.clone() };
        os.setup_msix(o2.io_queues + 1, 0x60)?;
        os.nvme_enable()?;
        os.identify().map(|_| ())
    };
    let r = demo::run_with(&o, &mut flow);
    assert!(r.ok, "{}\n{}", demo::summary(&r), r.transcript.join("\n"));
    assert!(r.interrupts.iter().all(|&v| v == 0x60), "{:?}", r.interrupts);
}

#[test]
fn pvh_guest_finds_the_host_bridge_and_the_nvme_only_through_xenpt() {
    let o = DemoOptions { profile: Profile::Pvh, ..quiet(2, 8) };
    let r = demo::run(&o);
    assert!(r.ok, "{}\n{}", demo::summary(&r), r.transcript.join("\n"));
    let ops: Vec<String> = r.ops.iter().map(|o| o.to_string()).collect();
    assert_eq!(
        ops[3..6],
        ["map_io_range(d1, Pci 0x20-0x20)", "map_io_range(d1, Port 0xcf8-0xcfb)", "map_io_range(d1, Pci 0x0-0x0)"],
        "the PVH profile claims the host bridge and port 0xCF8"
    );
    assert!(r.transcript.iter().any(|l| l.contains("0000:00:00.0: [1b36:0008] class 060000")), "host bridge found");
    assert_eq!(r.interrupts.iter().filter(|&&v| v == 0x42).count(), 2, "MSI-X through the local APIC of a PVH guest");
}

#[test]
fn without_a_chipset_a_pvh_guest_sees_no_pci_while_an_hvm_guest_has_qemus() {
    use xenpt::xen::sim::Sim;
    use xenpt::xen::GuestKind;
    for (kind, ok) in [(GuestKind::Pvh, false), (GuestKind::Hvm, true)] {
        let sim = Sim::default();
        let d = sim.create_domain(kind, 1, 1 << 20);
        let mut say = |_s: String| {};
        let mut os = demo::guest_os::GuestOs::new(sim.guest(d), &mut say);
        let r = os.probe_pci();
        assert_eq!(r.is_ok(), ok, "{kind:?}: {r:?}");
        if let Err(e) = r {
            assert!(e.to_string().contains("0xffffffff"), "{e}");
        }
    }
}

#[test]
fn intx_reaches_the_guest_through_the_bound_gsi_and_the_host_line_follows_msi() {
    let o = DemoOptions { irq: IrqMode::Intx, ..quiet(2, 8) };
    let r = demo::run(&o);
    assert!(r.ok, "{}\n{}", demo::summary(&r), r.transcript.join("\n"));
    assert!(r.interrupts.len() >= 10 && r.interrupts.iter().all(|&v| v == 0x50), "{:?}", r.interrupts);
    // The host's INTx-disable is cleared only while INTx is bound and no MSI is on: with
    // MSI-X enabled instead, the device must not raise INTx (checked by the MSI-X demo's
    // exact interrupt list elsewhere); here every completion came by INTx.
    let ops: Vec<String> = r.ops.iter().map(|o| o.to_string()).collect();
    assert!(!ops.iter().any(|o| o.starts_with("bind_pt_irq(d1, MSI")), "no MSI binding: {ops:#?}");
}

#[test]
fn a_pvh_guest_is_offered_no_intx() {
    let o = DemoOptions { profile: Profile::Pvh, irq: IrqMode::Intx, ..quiet(1, 1) };
    let r = demo::run(&o);
    assert!(!r.ok);
    assert!(r.failure.unwrap_or_default().contains("interrupt pin reads 0"));
    assert!(!r.ops.iter().any(|o| o.kind == "bind_pt_irq" && o.detail.contains("INTx")), "nothing bound for PVH");
}

#[test]
fn msi_map_failure_leaves_msi_disabled_and_the_device_works_on_intx() {
    let o = DemoOptions { irq: IrqMode::Msi, ..quiet(2, 4) };
    let mut flow = |os: &mut demo::guest_os::GuestOs, o: &DemoOptions, r: &mut demo::DemoReport| {
        let from = os.g.sim().op_count();
        os.g.sim().fail_nth("map_pirq", 1, xenpt::xen::Errno::ENOSPC);
        match demo::bring_up(os, o) {
            Err(e) => assert!(e.to_string().contains("MSI did not stay enabled"), "{e}"),
            Ok(_) => panic!("MSI enabled although map_pirq failed"),
        }
        let msi_ctrl = os.cfg_read(xenpt::host::nvme::MSI_CAP + 2, 2)?;
        assert_eq!(msi_ctrl & 1, 0, "the guest reads MSI as not enabled");
        let ops: Vec<String> = os.g.sim().ops()[from..].iter().map(|o| o.to_string()).collect();
        let pirq_ops: Vec<&String> = ops.iter().filter(|o| o.contains("pirq")).collect();
        assert_eq!(
            pirq_ops,
            ["map_pirq(d1, multi-MSI 0000:03:00.0 x4) -> ENOSPC"],
            "the failed map is the only pirq operation: the INTx line stays mapped and bound"
        );
        assert_eq!(os.g.sim().pirqs(os.g.domid()), vec![(11, true)]);
        // The guest falls back to INTx: the whole controller runs on it.
        os.setup_intx(o.io_queues + 1, 0x50)?;
        os.nvme_enable()?;
        os.identify()?;
        os.create_io_queues(o.io_queues)?;
        for qid in 1..=o.io_queues {
            let data: Vec<u8> = (0..4 * 512).map(|i| (i as u8) ^ qid as u8).collect();
            let (wbuf, rbuf) = (os.alloc(4096), os.alloc(4096));
            os.g.ram_write(wbuf, &data)?;
            os.rw(qid, true, 0, 4, wbuf)?;
            os.rw(qid, false, 0, 4, rbuf)?;
            let mut back = vec![0u8; data.len()];
            os.g.ram_read(rbuf, &mut back)?;
            assert_eq!(back, data, "queue {qid}");
            r.bytes_verified += data.len() as u64;
        }
        Ok(())
    };
    let r = demo::run_with(&o, &mut flow);
    assert!(r.ok, "{}\n{}", demo::summary(&r), r.transcript.join("\n"));
    assert_eq!(r.bytes_verified, 2 * 4 * 512);
    // Identify (2) and queue creation (4) on the admin queue, a write and a read per queue.
    assert_eq!(r.interrupts, vec![0x50u32; 2 + 4 + 2 * 2]);
    let ops: Vec<String> = r.ops.iter().map(|o| o.to_string()).collect();
    assert!(!ops.iter().any(|o| o.starts_with("bind_pt_irq(d1, MSI")), "no MSI binding: {ops:#?}");
    let intx_unbinds = ops.iter().filter(|o| o.as_str() == "unbind_pt_irq(d1, INTx pirq 11 -> 00:04 INTA)").count();
    assert_eq!(intx_unbinds, 1, "INTx released once, at teardown");
}
