//! Guest snapshots and the stand-in for the external-snapshotter's snapshot controller.
