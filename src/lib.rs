//! xenpt: a standalone PCI passthrough device model for Xen.
//!
//! One process per passed-through PCI function. It registers an ioreq server for the
//! guest's virtual slot, owns the function's guest-visible config space, maps BARs where
//! the guest programs them, and turns guest MSI-X programming into pirq map + bind
//! operations. It speaks to Xen only through the [`xen::Xen`] trait: a simulator today,
//! /dev/xen/privcmd and /dev/xen/evtchn on a real host.

pub mod bars;
pub mod config_space;
pub mod console;
pub mod demo;
pub mod device;
pub mod guest_view;
pub mod host;
pub mod host_bridge;
pub mod ioreq;
pub mod log;
pub mod msi;
pub mod names;
pub mod pci;
pub mod pirq;
pub mod real;
pub mod runner;
pub mod xen;

/// The kind of guest xenpt serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Profile {
    /// HVM domU: MSI, MSI-X and INTx.
    Hvm,
    /// PVH domU: MSI and MSI-X only (no IO-APIC), interrupt pin reads 0.
    Pvh,
}
