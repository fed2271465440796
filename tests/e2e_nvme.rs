//! End to end: a simulated HVM guest uses the emulated NVMe controller through xenpt on
//! the simulated Xen; the exact sequence of Xen operations xenpt performs is asserted.

use xenpt::demo::{self, DemoOptions};
use xenpt::Profile;

fn quiet(io_queues: u16, blocks: u32) -> DemoOptions {
    DemoOptions { profile: Profile::Hvm, io_queues, blocks, verbose: false }
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
    for p in 55..=57 {
        want.push(format!("unmap_pirq(d1, pirq {p})"));
    }
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
    assert_eq!(r.interrupts, vec![0x40, 0x40, 0x40, 0x40, 0x40, 0x40, 0x41, 0x41, 0x42, 0x42]);
    assert_eq!(r.nvme.interrupts, 10);
}

#[test]
fn each_of_many_queues_completes_on_its_own_vector() {
    let r = demo::run(&quiet(8, 8));
    assert!(r.ok, "{}", demo::summary(&r));
    for q in 1..=8u8 {
        let v = 0x40 + q;
        assert_eq!(r.interrupts.iter().filter(|&&x| x == v).count(), 2, "queue {q} on vector {v:#x}");
    }
    let binds = r.ops.iter().filter(|o| o.kind == "bind_pt_irq").count();
    assert_eq!(binds, 9, "one bind per programmed entry, no re-binds");
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
