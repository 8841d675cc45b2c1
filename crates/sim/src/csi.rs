//! The Harvester CSI driver and a guest cluster's volumes.
