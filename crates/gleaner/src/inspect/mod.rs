//! The read-only commands for people, `gleaner plan` and `gleaner explain`: answers from the
//! Footprints and the same live reads the reclaimer makes, decided by the same core functions
//! (`plan`, `plan_if_deleted`), so they can never tell a story the reclaimer would not. Nothing
//! here writes; an answer that cannot be worked out whole is an error, never a partial table.

pub mod adopt;
pub mod audit;
pub mod explain;
mod output;
pub mod plan;

use std::collections::{BTreeMap, BTreeSet};

use gleaner_core::{
    ClusterIdentity,
    attribution::HostObjectRecord,
    reclaim::{self, Plan, ReclaimFacts},
};
use kube::{
    Api, Client, ResourceExt,
    api::{DynamicObject, ListParams},
    runtime::reflector,
};
use serde::Serialize;

use crate::{
    Error, Result,
    cli::InspectArgs,
    footprint::{Footprint, Phase},
    management::{
        Capi,
        harvesters::Harvesters,
        live,
        observe::provisioning_cluster,
        reclaimer::{self, Confirmation, Marks},
    },
    metrics::Metrics,
};

pub use output::print;

/// What the plan answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Question {
    /// The cluster lives (its Footprint is `Tracking`): what deleting it now would do, once its
    /// deletion is confirmed, its VMs deleting and the grace period over.
    IfDeletedNow,
    /// The cluster's deletion was confirmed: what the reclaimer decides now (the grace period
    /// aside).
    Now,
}

/// A Footprint's plan as worked out now.
pub struct Decided {
    pub question: Question,
    pub plan: Plan,
    /// Every recorded object, whatever the plan.
    pub records: Vec<HostObjectRecord>,
    /// The PVCs' storage requests, by record UID.
    pub bytes: BTreeMap<String, u64>,
}

/// A connection to the management cluster and, through the cloud credentials Rancher holds, to
/// each Harvester.
pub struct Session {
    client: Client,
    capi: Capi,
    footprints: Api<Footprint>,
    harvesters: Harvesters,
    gleaner_namespace: String,
    policy_max_age: std::time::Duration,
}

impl Session {
    pub async fn open(args: &InspectArgs, policy_max_age: std::time::Duration) -> Result<Self> {
        let client = args.kube.client().await?;
        let capi = Capi::discover(&client).await?;
        // The controller's Harvester clients, without its Footprint cache: nothing here follows
        // Footprints, it only reads the credentials they name.
        let no_footprints = reflector::store::Writer::<Footprint>::default().as_reader();
        let harvesters = Harvesters::new(
            client.clone(),
            Metrics::default(),
            args.kube.api_timeout,
            no_footprints,
        );
        Ok(Self {
            footprints: Api::namespaced(client.clone(), &args.gleaner_namespace),
            client,
            capi,
            harvesters,
            gleaner_namespace: args.gleaner_namespace.clone(),
            policy_max_age,
        })
    }

    /// Every Footprint, read live.
    async fn all_footprints(&self) -> Result<Vec<Footprint>> {
        Ok(self
            .footprints
            .list(&ListParams::default())
            .await
            .map_err(|source| Error::Kube {
                context: format!("cannot list the Footprints in {}", self.gleaner_namespace),
                source,
            })?
            .items)
    }

    /// The Footprint of the cluster `namespace/name`: the one of the live cluster's UID, else the
    /// newest of that name.
    async fn footprint_of(&self, namespace: &str, name: &str) -> Result<Footprint> {
        let cluster = Api::<DynamicObject>::namespaced_with(
            self.client.clone(),
            namespace,
            &provisioning_cluster(),
        )
        .get_opt(name)
        .await
        .map_err(|source| Error::Kube {
            context: format!("cannot read Cluster {namespace}/{name}"),
            source,
        })?;
        let mut named: Vec<Footprint> = self
            .all_footprints()
            .await?
            .into_iter()
            .filter(|footprint| {
                footprint.spec.identity.namespace == namespace
                    && footprint.spec.identity.name == name
            })
            .collect();
        named.sort_by_key(|footprint| footprint.creation_timestamp().map(|time| time.0));
        let live_uid = cluster.as_ref().and_then(ResourceExt::uid);
        let chosen = match &live_uid {
            Some(uid) => named
                .iter()
                .position(|footprint| footprint.spec.identity.provisioning_cluster_uid == *uid),
            None => named.len().checked_sub(1),
        };
        match (chosen, cluster) {
            (Some(index), _) => Ok(named.swap_remove(index)),
            (None, Some(_)) => Err(Error::Unanswerable(format!(
                "cluster {namespace}/{name} has no Footprint in {}: gleaner records only \
                 Harvester-backed clusters, once it watches their namespace (is gleaner running \
                 there, with --gleaner-namespace right?)",
                self.gleaner_namespace
            ))),
            (None, None) => Err(Error::Unanswerable(format!(
                "no cluster {namespace}/{name} in Rancher and no Footprint in {} records one",
                self.gleaner_namespace
            ))),
        }
    }

    /// What the reclaimer's plan says of the Footprint's cluster now: for a living cluster, as
    /// if it were deleted now.
    async fn decide(&self, footprint: &Footprint) -> Result<Decided> {
        let status = footprint.status.clone().unwrap_or_default();
        let records = status.records();
        let vms = live::recorded_vms(&self.harvesters, &status).await?;
        let marks = Marks::of(footprint, &status);
        let reads = live::objects(&self.harvesters, &records).await?;
        let others = live::other_footprints(&self.footprints, &footprint.name_any()).await?;
        // An adopted Footprint's objects are confirmed one by one, by a live audit.
        let unorphaned = if footprint.spec.adopted.is_some() {
            reclaimer::no_longer_orphans(
                &self.harvesters,
                &self.footprints,
                footprint,
                &records,
                &reads.objects,
            )
            .await?
        } else {
            BTreeSet::new()
        };
        let facts = ReclaimFacts {
            records: &records,
            live: &reads.objects,
            other_footprints: &others,
            unorphaned: &unorphaned,
            ..marks.facts(&vms, self.policy_max_age)
        };
        let question = match status.phase {
            None | Some(Phase::Tracking) => Question::IfDeletedNow,
            Some(Phase::Reclaiming | Phase::Reclaimed) => Question::Now,
        };
        let plan = match question {
            Question::IfDeletedNow => reclaim::plan_if_deleted(&facts),
            Question::Now => {
                let recorded = ClusterIdentity::try_from(&footprint.spec.identity)?;
                let Confirmation {
                    confirmed,
                    identity_changed,
                } = Confirmation::of(&self.client, &self.capi, footprint, &recorded).await?;
                reclaim::plan(&ReclaimFacts {
                    confirmed,
                    identity_changed,
                    deletions_begin: Some(facts.now),
                    ..facts
                })
            }
        };
        Ok(Decided {
            question,
            plan,
            records,
            bytes: reads.bytes,
        })
    }
}
