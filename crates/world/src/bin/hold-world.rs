//! Starts the default world, prints its folder, and holds it until killed. The runtime's tests
//! kill it with SIGKILL to show that no control-plane process outlives its parent.

#[tokio::main]
async fn main() -> Result<(), gleaner_world::Error> {
    let world = gleaner_world::World::builder().start().await?;
    println!("{}", world.dir().display());
    std::future::pending::<()>().await;
    Ok(())
}
