//! The guest cluster's Harvester cloud provider: guest LoadBalancer Services become Harvester LoadBalancers.
