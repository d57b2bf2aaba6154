//! The admin command tree: every command, argument and flag, with the help
//! text `annexmesh admin --help` shows.

use clap::Subcommand;

use super::{connect, migrate, users};

#[derive(Debug, clap::Args)]
pub struct AdminArgs {
    /// Print one JSON document on stdout instead of text (sizes in bytes,
    /// ages in seconds); errors still go to stderr with a non-zero exit.
    #[arg(
        long,
        global = true,
        env = "ANNEXMESH_ADMIN_JSON",
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub json: bool,
    #[command(flatten)]
    pub connect: connect::ConnectArgs,
    #[command(subcommand)]
    pub command: AdminCommand,
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Clusters: create, list, delete, minimum copies, space reserve.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Nodes: list with health, drain and undrain, cost.
    #[command(subcommand)]
    Node(NodeCommand),
    /// Access tokens for the line-protocol front-end (`annexmesh gateway
    /// --p2p`, AUTH): create, list, revoke. The coordinator keeps only their
    /// SHA-256.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Users of P2P over HTTP (basic auth): add, list, remove. A user's
    /// password is also a line-protocol token.
    #[command(subcommand)]
    User(users::UserCommand),
    /// Join tokens for new agents and gateways (`--join-token`).
    #[command(subcommand)]
    JoinToken(JoinTokenCommand),
    /// Which nodes hold a key, from the location log.
    Whereis {
        /// A git-annex key (e.g. SHA256E-s1048576--...).
        key: String,
    },
    /// Compare the location log with the keys the agents hold and list
    /// every difference; exits non-zero when there are any (or a node
    /// could not be asked) and --fix was not given.
    Fsck {
        /// Only the nodes of this cluster.
        #[arg(long, env = "ANNEXMESH_ADMIN_FSCK_CLUSTER")]
        cluster: Option<String>,
        /// Record what the nodes hold.
        #[arg(long, env = "ANNEXMESH_ADMIN_FSCK_FIX")]
        fix: bool,
    },
    /// Run one repair pass now: bring every key to its target copies
    /// (copying agent to agent from a good holder) and move content off
    /// draining nodes. Fails when some keys could not be brought to target.
    Repair {
        /// Only this cluster (name or UUID).
        #[arg(long, env = "ANNEXMESH_ADMIN_REPAIR_CLUSTER")]
        cluster: Option<String>,
        /// List the copies and drops a pass would make; change nothing.
        #[arg(long, env = "ANNEXMESH_ADMIN_REPAIR_DRY_RUN", conflicts_with = "status")]
        dry_run: bool,
        /// Show the last pass's totals and the draining nodes' progress.
        #[arg(long, env = "ANNEXMESH_ADMIN_REPAIR_STATUS", conflicts_with = "cluster")]
        status: bool,
    },
    /// Run one scrub pass now on every node (or the chosen ones): each
    /// re-reads its checksum objects, and quarantines and strikes bad
    /// copies, which repair then makes again. Prints a line per node; fails
    /// when a bad copy was found or a node could not be asked.
    Scrub {
        /// Only this node (name or UUID).
        #[arg(long, env = "ANNEXMESH_ADMIN_SCRUB_NODE")]
        node: Option<String>,
        /// Only the nodes of this cluster (name or UUID).
        #[arg(long, env = "ANNEXMESH_ADMIN_SCRUB_CLUSTER")]
        cluster: Option<String>,
        /// Read at most this many MB/s on each node (default: full speed).
        #[arg(long, env = "ANNEXMESH_ADMIN_SCRUB_RATE")]
        rate: Option<f64>,
    },
    /// Move the mesh's state to another store (e.g. from redb to
    /// PostgreSQL) and verify it there. Stop the coordinators first; the
    /// target must be empty. Needs no coordinator.
    MigrateStore(migrate::MigrateArgs),
    /// Every coordinator given with --coordinator (a comma list), each with
    /// its own view: its store, the cluster clock, clusters and nodes' health;
    /// then the coordinators the store lists. Fails when one did not answer.
    Status,
    /// Show or set a node's preferred content: which content PUTs to its
    /// cluster place on it, in git-annex's preferred content syntax (e.g.
    /// `largerthan=1MB`, `include=*.mp3 or smallerthan=500kB`, `nothing`).
    /// Without EXPR, prints the current one; "" unsets it, and the node then
    /// wants everything. Content no eligible node wants goes to them all.
    Wanted {
        /// Node name or UUID.
        node: String,
        /// The expression; several words are joined with spaces.
        #[arg(num_args = 0.., allow_hyphen_values = true)]
        expr: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Create a cluster (its name is the path clients use: URL/NAME).
    Create {
        /// Letters, digits, '-', '_' and '.'.
        name: String,
    },
    /// Every cluster with its settings.
    List,
    /// Delete a cluster. Refused while it has nodes or content: drain and
    /// remove its nodes first (`admin node drain`, `admin node remove`).
    Delete {
        /// Cluster name or UUID.
        name: String,
        /// Delete it even with nodes or content; its nodes are removed from
        /// the mesh and what they hold is lost to it.
        #[arg(long, env = "ANNEXMESH_ADMIN_CLUSTER_DELETE_FORCE")]
        force: bool,
    },
    /// Show or set how many nodes must store a PUT for it to succeed
    /// (default 1). Nodes that did store are reported to the client either way.
    Mincopies {
        /// Cluster name or UUID.
        cluster: String,
        /// The new minimum; without it, prints the current one.
        n: Option<u32>,
    },
    /// Show or set the free space a PUT must leave on a node (bytes or a size
    /// such as 500MB, 2GiB; "default" for the coordinator's --reserve).
    Reserve {
        /// Cluster name or UUID.
        cluster: String,
        /// The new reserve; without it, prints the current one.
        size: Option<String>,
    },
    /// Show or set how PUTs reach the cluster's nodes: `fanout` (the gateway
    /// sends a copy to every node at once) or `chain` (the gateway sends one
    /// copy to the first node, which stores it while forwarding it to the
    /// next, and so on: the gateway's link carries the content once).
    Replication {
        /// Cluster name or UUID.
        cluster: String,
        /// The new mode; without it, prints the current one.
        mode: Option<ReplicationArg>,
    },
}

/// `admin cluster replication`'s modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReplicationArg {
    Fanout,
    Chain,
}

#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// Every node with its health, free space, last report, state and
    /// settings.
    List {
        /// Only the nodes of this cluster.
        #[arg(long, env = "ANNEXMESH_ADMIN_NODE_LIST_CLUSTER")]
        cluster: Option<String>,
    },
    /// Stop placing new content on a node and move what it holds to other
    /// nodes (repair drops its copies once they are safe elsewhere); it
    /// serves what it has meanwhile.
    Drain {
        /// Node name or UUID.
        node: String,
        /// Run repair passes until the node holds nothing, showing progress.
        #[arg(long, env = "ANNEXMESH_ADMIN_NODE_DRAIN_WAIT")]
        wait: bool,
    },
    /// Place new content on a drained node again.
    Undrain {
        /// Node name or UUID.
        node: String,
    },
    /// Remove a node from the mesh: it leaves the topology (no request
    /// waits for it, no content is placed on it), its name becomes free and
    /// its location entries are struck. Refused while the location log
    /// lists no other node for some key it holds.
    Remove {
        /// Node name or UUID.
        node: String,
        /// The node is gone for good: remove it even when it held the only
        /// copy of some keys (they are then lost to the mesh).
        #[arg(long, env = "ANNEXMESH_ADMIN_NODE_REMOVE_LOST")]
        lost: bool,
    },
    /// Show or set a node's cost (default 100): GET and CHECKPRESENT use the
    /// node with the lowest cost among those holding the content, then the
    /// least busy one.
    Cost {
        /// Node name or UUID.
        node: String,
        /// The new cost; without it, prints the current one.
        n: Option<u32>,
    },
}

#[derive(Debug, Subcommand)]
pub enum JoinTokenCommand {
    /// Make a join token and print it (it cannot be shown again).
    Create {
        /// agent or gateway.
        #[arg(long, env = "ANNEXMESH_ADMIN_JOIN_TOKEN_CREATE_ROLE")]
        role: String,
        /// How long it may be used (e.g. 10m, 1h, 2d; at most 7 days).
        #[arg(long, env = "ANNEXMESH_ADMIN_JOIN_TOKEN_CREATE_TTL", default_value = "1h", value_parser = crate::clock::parse_duration)]
        ttl: std::time::Duration,
        /// How many members may join with it.
        #[arg(long, env = "ANNEXMESH_ADMIN_JOIN_TOKEN_CREATE_USES", default_value_t = 1)]
        uses: u32,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Make a new token and print it on stdout. It is generated here and
    /// only its hash is sent, so it cannot be shown again. Default access:
    /// readwrite.
    Create {
        /// GET, CHECKPRESENT and locking only.
        #[arg(long, env = "ANNEXMESH_ADMIN_TOKEN_CREATE_READONLY", conflicts_with = "appendonly")]
        readonly: bool,
        /// Also PUT, but no REMOVE.
        #[arg(long, env = "ANNEXMESH_ADMIN_TOKEN_CREATE_APPENDONLY")]
        appendonly: bool,
        /// A note for operators (who or what uses the token).
        #[arg(long, env = "ANNEXMESH_ADMIN_TOKEN_CREATE_LABEL", default_value = "")]
        label: String,
    },
    /// Ids, access modes, creation times and labels (never the tokens).
    List,
    /// Revoke a token by its id (or a unique prefix of at least 6 digits).
    Revoke {
        /// The token's id (as `token list` shows it).
        id: String,
    },
}
