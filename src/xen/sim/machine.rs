//! The simulated machine's side of a physical device: what the hardware sees when the
//! guest touches a direct-mapped BAR, and the bus through which the device does DMA (via
//! the IOMMU, into the guest it is assigned to) and raises interrupts.

use crate::pci::Sbdf;

/// A physical BAR as the machine decodes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MachineBar {
    pub index: u8,
    pub base: u64,
    pub size: u64,
    pub io: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DmaError {
    #[error("IOMMU fault: device {sbdf} accessed {gpa:#x}+{len:#x}, outside the memory of its domain")]
    IommuFault { sbdf: Sbdf, gpa: u64, len: usize },
    #[error("device {0} is not assigned to any domain")]
    NotAssigned(Sbdf),
}

/// What a device can do to the rest of the machine.
pub trait DeviceBus {
    fn dma_read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), DmaError>;
    fn dma_write(&self, gpa: u64, buf: &[u8]) -> Result<(), DmaError>;
    /// The device sends the message of MSI-X entry `entry` (it checked its own Enable and
    /// Function Mask; per-vector masking is Xen's, in the simulator).
    fn signal_msix(&self, entry: u16);
    /// The device sends MSI vector `index` of its block.
    fn signal_msi(&self, index: u32);
    /// The device pulses its INTx line (modelled as an edge per completion batch).
    fn signal_intx(&self);
}

/// A physical PCI function in the simulated machine.
pub trait MachineDevice: Send + Sync {
    fn sbdf(&self) -> Sbdf;
    fn machine_bars(&self) -> Vec<MachineBar>;
    /// CPU read of a BAR (offset inside the BAR).
    fn bar_read(&self, bar: u8, offset: u64, size: u32, bus: &dyn DeviceBus) -> u64;
    /// CPU write of a BAR.
    fn bar_write(&self, bar: u8, offset: u64, size: u32, value: u64, bus: &dyn DeviceBus);
    /// Number of MSI-X entries the function has (for Xen's msixtbl bounds).
    fn msix_entries(&self) -> u16;
    /// The GSI its INTx line is wired to, if any.
    fn gsi(&self) -> Option<u32>;
    /// Xen's own write of an MSI-X entry's mask bit (vector control bit 0). Xen owns the
    /// physical table once an entry has a pirq: it masks the entry at map and unbind,
    /// unmasks it at bind with the guest's mask, follows the guest's masks through its
    /// msixtbl, and masks it again at unmap. Called outside the simulator's lock.
    fn xen_set_vector_mask(&self, _entry: u16, _masked: bool) {}
}
