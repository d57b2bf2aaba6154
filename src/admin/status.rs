//! `annexmesh admin status`: every coordinator given (`--coordinator
//! URL,URL,...`) asked for its own view, side by side, and the coordinators
//! their store lists beside them.

use super::connect::{self, ConnectArgs};
use crate::rpc;

fn age(ms: u64) -> String {
    match ms {
        0..1_000 => format!("{ms}ms"),
        1_000..120_000 => format!("{}s", ms / 1000),
        _ => format!("{}m", ms / 60_000),
    }
}

pub async fn run(args: &ConnectArgs) -> anyhow::Result<()> {
    let urls: Vec<String> = args
        .coordinator
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(String::from)
        .collect();
    let (mut answered, mut listed) = (0, Vec::new());
    println!("COORDINATOR\tSTATE\tSTORE\tCLOCK_MS\tCLUSTERS\tNODES_UP\tNODES_DEGRADED\tNODES");
    for url in &urls {
        // Each one on its own: no failover to another, and no long wait.
        let mut one = ConnectArgs { coordinator: url.clone(), ..args.clone() };
        one.failover.coordinator_failover =
            one.failover.coordinator_failover.min(std::time::Duration::from_secs(3));
        let reply = match connect::connect(&one).await {
            Ok(mut c) => c.status(rpc::StatusRequest {}).await.map(|r| r.into_inner()),
            Err(e) => Err(tonic::Status::unavailable(format!("{e:#}"))),
        };
        match reply {
            Ok(s) => {
                answered += 1;
                println!(
                    "{url}\tup (v{}, listens on {})\t{}{}\t{}\t{}\t{}\t{}\t{}",
                    s.version,
                    s.address,
                    s.store,
                    if s.shared { " (shared)" } else { "" },
                    s.clock_ms,
                    s.clusters,
                    s.nodes_up,
                    s.nodes_degraded,
                    s.nodes
                );
                for c in s.coordinators {
                    if !listed.iter().any(|l: &rpc::CoordinatorStatus| l.id == c.id) {
                        listed.push(c);
                    }
                }
            }
            Err(e) => println!("{url}\tunreachable: {}\t-\t-\t-\t-\t-\t-", e.message()),
        }
    }
    if !listed.is_empty() {
        println!();
        println!("COORDINATORS THE STORE LISTS\tVERSION\tLAST SEEN");
        for c in &listed {
            println!("{}\tv{}\t{} ago", c.address, c.version, age(c.age_ms));
        }
    }
    if answered == 0 {
        anyhow::bail!("no coordinator answered ({})", urls.join(", "));
    }
    if answered < urls.len() {
        anyhow::bail!("{} of {} coordinators did not answer", urls.len() - answered, urls.len());
    }
    Ok(())
}
