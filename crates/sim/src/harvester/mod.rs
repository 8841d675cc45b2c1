//! Harvester's side: the VM controller, the PVC controller and the PVC admission webhook.
