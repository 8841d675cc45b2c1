//! What gleaner's integration tests share.

use gleaner_world::{Role, World};
use tokio::sync::OnceCell;

/// This test binary's world: the default one plus a guest apiserver, with gleaner's CRDs in
/// the management cluster, from the same function `gleaner crd` prints.
pub async fn world() -> &'static World {
    static WORLD: OnceCell<World> = OnceCell::const_new();
    WORLD
        .get_or_init(|| async {
            World::builder()
                .with_crds(Role::Management, gleaner::footprint::crds())
                .guests(1)
                .start()
                .await
                .unwrap()
        })
        .await
}
