//! The node driver's and Rancher's naming rules (PROVENANCE.md §7).
