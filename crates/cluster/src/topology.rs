//! A Qdrant cluster as the engine sees it: the nodes reached from the URLs an
//! operator gave, their peer ids and versions, and the placement of each
//! collection's shard replicas.
//!
//! # Discovery
//! Every URL given must answer. In distributed mode `GET /cluster` lists
//! every peer, but only by its internal (p2p) address; for peers not given,
//! the REST URL is derived from that address with the port offset the given
//! node shows between its own REST and p2p ports (6333 and 6335 by default,
//! the same on every node of a usual deployment), and accepted only when
//! the node there reports the expected peer id. Peers that cannot be reached
//! this way are reported; their shards are read from other replicas.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_qdrant::{
    ApiKey, Client, ClientOptions, CollectionClusterInfo, ReplicaState, VersionInfo,
};

use cairn_engine::Error as EngineError;

use crate::error::{Error, Result};

/// How to reach a cluster.
#[derive(Debug, Clone)]
pub struct QdrantTarget {
    /// REST URLs of one or more nodes.
    pub urls: Vec<String>,
    /// API key or JWT, sent as `api-key`.
    pub api_key: Option<ApiKey>,
    /// Timeouts and retries.
    pub client: ClientOptions,
}

impl QdrantTarget {
    /// A target for `urls` (comma-separated lists are split) with defaults.
    #[must_use]
    pub fn new(urls: &[String], api_key: Option<ApiKey>) -> Self {
        Self {
            urls: urls
                .iter()
                .flat_map(|u| u.split(','))
                .map(|u| u.trim().trim_end_matches('/').to_string())
                .filter(|u| !u.is_empty())
                .collect(),
            api_key,
            client: ClientOptions::default(),
        }
    }
}

/// One reachable node.
#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub(crate) client: Client,
    /// Peer id in distributed mode; `None` on a single node.
    pub(crate) peer_id: Option<u64>,
    pub(crate) version: VersionInfo,
}

impl Node {
    pub(crate) fn url(&self) -> String {
        self.client.node()
    }
}

/// The reachable nodes of one cluster.
#[derive(Debug, Clone)]
pub(crate) struct Cluster {
    pub(crate) nodes: Vec<Node>,
    /// Peers known to the cluster but not reached: peer id → p2p address.
    pub(crate) unreached: BTreeMap<u64, String>,
}

fn port_of(url: &url::Url) -> Option<u16> {
    url.port_or_known_default()
}

impl Cluster {
    /// Connects to every URL in `target` and discovers the other peers.
    pub(crate) async fn discover(target: &QdrantTarget) -> Result<Self> {
        if target.urls.is_empty() {
            return Err(EngineError::InvalidArgument("no Qdrant URL given".into()).into());
        }
        let mut opts = target.client.clone();
        opts.api_key.clone_from(&target.api_key);
        let mut nodes: Vec<Node> = Vec::new();
        let mut peers: BTreeMap<u64, String> = BTreeMap::new();
        // (rest url, own p2p uri) of a given node, to derive the others' URLs.
        let mut pattern: Option<(url::Url, url::Url)> = None;
        for u in &target.urls {
            let client = Client::new(u, opts.clone())?;
            let version = client.version().await?;
            let status = match client.cluster().await {
                Ok(s) => s,
                // Keys scoped to collections may not read the cluster
                // status: the nodes given are then all there is.
                Err(e) if e.status() == Some(403) => {
                    tracing::info!(node = %client.node(), "the API key may not read /cluster; using only the nodes given");
                    cairn_qdrant::ClusterStatus {
                        status: "unknown".into(),
                        peer_id: None,
                        peers: BTreeMap::new(),
                    }
                }
                Err(e) => return Err(e.into()),
            };
            let peer_id = status.peer_id.filter(|_| status.status == "enabled");
            if let Some(id) = peer_id {
                for (pid, p) in &status.peers {
                    if let Ok(pid) = pid.parse::<u64>() {
                        peers.insert(pid, p.uri.clone());
                    }
                }
                if pattern.is_none() {
                    if let (Some(own), Ok(rest)) =
                        (status.peers.get(&id.to_string()), url::Url::parse(u))
                    {
                        if let Ok(p2p) = url::Url::parse(&own.uri) {
                            pattern = Some((rest, p2p));
                        }
                    }
                }
            }
            if peer_id.is_some() && nodes.iter().any(|n| n.peer_id == peer_id) {
                continue; // the same node under two URLs
            }
            nodes.push(Node {
                client,
                peer_id,
                version,
            });
        }
        let known: BTreeSet<u64> = nodes.iter().filter_map(|n| n.peer_id).collect();
        let mut unreached = BTreeMap::new();
        for (pid, p2p) in peers {
            if known.contains(&pid) {
                continue;
            }
            match Self::derive(&pattern, &p2p, pid, &opts).await {
                Some(node) => nodes.push(node),
                None => {
                    tracing::warn!(peer = pid, address = %p2p, "cluster peer not reachable at a derived URL; give its REST URL to use it");
                    unreached.insert(pid, p2p);
                }
            }
        }
        Ok(Self { nodes, unreached })
    }

    /// The REST client of peer `pid`, whose p2p address is `p2p`, if it
    /// answers as that peer at the derived URL.
    async fn derive(
        pattern: &Option<(url::Url, url::Url)>,
        p2p: &str,
        pid: u64,
        opts: &ClientOptions,
    ) -> Option<Node> {
        let (rest, own_p2p) = pattern.as_ref()?;
        let offset = i32::from(port_of(rest)?) - i32::from(port_of(own_p2p)?);
        let p2p = url::Url::parse(p2p).ok()?;
        let port = u16::try_from(i32::from(port_of(&p2p)?) + offset).ok()?;
        let url = format!("{}://{}:{port}", rest.scheme(), p2p.host_str()?);
        let mut quick = opts.clone();
        quick.attempts = 2;
        let client = Client::new(&url, quick).ok()?;
        let status = client.cluster().await.ok()?;
        if status.peer_id != Some(pid) {
            return None;
        }
        let version = client.version().await.ok()?;
        let client = Client::new(&url, opts.clone()).ok()?;
        Some(Node {
            client,
            peer_id: Some(pid),
            version,
        })
    }

    /// Any node, for cluster-wide calls (collections, aliases, creation).
    pub(crate) fn any(&self) -> &Node {
        &self.nodes[0]
    }

    /// The version of the first node; all nodes are expected to match.
    pub(crate) fn version(&self) -> &VersionInfo {
        &self.any().version
    }

    /// Each node's view of a collection's shards, in node order.
    pub(crate) async fn placement(&self, collection: &str) -> Result<Placement> {
        let views = futures::future::try_join_all(
            self.nodes
                .iter()
                .map(|n| n.client.collection_cluster(collection)),
        )
        .await?;
        Ok(Placement { views })
    }

    /// The placement of a collection just created: polls until every node
    /// knows it (creation reaches the other nodes through consensus) and it
    /// has `shards` shards, for up to `timeout`.
    pub(crate) async fn placement_when_known(
        &self,
        collection: &str,
        shards: usize,
        timeout: Duration,
    ) -> Result<Placement> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.placement(collection).await {
                Ok(p) if p.shards().len() >= shards => return Ok(p),
                Ok(p) if Instant::now() >= deadline => {
                    return Err(Error::Verification(format!(
                        "collection {collection} has {} shard(s) on the target after {}s; expected {shards}",
                        p.shards().len(),
                        timeout.as_secs()
                    )))
                }
                Err(Error::Qdrant(e)) if e.is_not_found() && Instant::now() < deadline => {}
                Err(e) if Instant::now() >= deadline => return Err(e),
                Ok(_) | Err(_) => {}
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Polls until every replica of every shard of `collection` is Active
    /// (and no transfer runs), or `timeout` passes. Returns the last placement.
    pub(crate) async fn wait_active(
        &self,
        collection: &str,
        timeout: Duration,
    ) -> Result<Placement> {
        let deadline = Instant::now() + timeout;
        loop {
            let p = self.placement(collection).await?;
            let pending = p.not_active();
            if pending.is_empty() {
                return Ok(p);
            }
            if Instant::now() >= deadline {
                return Err(Error::Verification(format!(
                    "collection {collection}: replicas still not Active after {}s: {}",
                    timeout.as_secs(),
                    pending.join(", ")
                )));
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
}

/// Where a collection's shard replicas are, as each node reports it.
#[derive(Debug, Clone)]
pub(crate) struct Placement {
    /// One view per node, in [`Cluster::nodes`] order.
    pub(crate) views: Vec<CollectionClusterInfo>,
}

/// One replica as seen by the node that holds it (or by another node).
#[derive(Debug, Clone)]
pub(crate) struct Replica {
    pub(crate) peer_id: u64,
    /// Index into [`Cluster::nodes`], when the holder is reachable.
    pub(crate) node: Option<usize>,
    pub(crate) state: ReplicaState,
    /// Points in the replica (only known from its holder).
    pub(crate) points: Option<u64>,
}

/// A shard and its replicas.
#[derive(Debug, Clone)]
pub(crate) struct ShardPlacement {
    pub(crate) shard_id: u32,
    pub(crate) shard_key: Option<serde_json::Value>,
    pub(crate) replicas: Vec<Replica>,
}

impl Placement {
    /// Every shard with its replicas: local views are authoritative for the
    /// replicas of reachable nodes, remote views fill in the others.
    pub(crate) fn shards(&self) -> Vec<ShardPlacement> {
        let mut out: BTreeMap<u32, ShardPlacement> = BTreeMap::new();
        for (ni, v) in self.views.iter().enumerate() {
            for l in &v.local_shards {
                let e = out.entry(l.shard_id).or_insert_with(|| ShardPlacement {
                    shard_id: l.shard_id,
                    shard_key: None,
                    replicas: Vec::new(),
                });
                if e.shard_key.is_none() {
                    e.shard_key.clone_from(&l.shard_key);
                }
                e.replicas.retain(|r| r.peer_id != v.peer_id);
                e.replicas.push(Replica {
                    peer_id: v.peer_id,
                    node: Some(ni),
                    state: l.state.clone(),
                    points: Some(l.points_count),
                });
            }
        }
        for v in &self.views {
            for r in &v.remote_shards {
                let e = out.entry(r.shard_id).or_insert_with(|| ShardPlacement {
                    shard_id: r.shard_id,
                    shard_key: None,
                    replicas: Vec::new(),
                });
                if e.shard_key.is_none() {
                    e.shard_key.clone_from(&r.shard_key);
                }
                if !e.replicas.iter().any(|x| x.peer_id == r.peer_id) {
                    e.replicas.push(Replica {
                        peer_id: r.peer_id,
                        node: None,
                        state: r.state.clone(),
                        points: None,
                    });
                }
            }
        }
        for e in out.values_mut() {
            e.replicas.sort_by_key(|r| r.peer_id);
        }
        out.into_values().collect()
    }

    /// Replicas that are not Active, and transfers in progress, described.
    pub(crate) fn not_active(&self) -> Vec<String> {
        let mut out = Vec::new();
        for s in self.shards() {
            for r in &s.replicas {
                if r.state != ReplicaState::Active {
                    out.push(format!(
                        "shard {} on peer {} is {:?}",
                        s.shard_id, r.peer_id, r.state
                    ));
                }
            }
        }
        for v in &self.views {
            if !v.shard_transfers.is_empty() {
                out.push(format!(
                    "{} shard transfer(s) in progress",
                    v.shard_transfers.len()
                ));
                break;
            }
        }
        out
    }
}

/// A shared read rate limit (a token bucket that may go into debt): each
/// read takes its bytes, and the reader sleeps until the debt is paid.
#[derive(Debug)]
pub(crate) struct RateLimiter(cairn_engine::TokenBucket);

impl RateLimiter {
    pub(crate) fn new(bytes_per_sec: u64) -> Arc<Self> {
        Arc::new(Self(cairn_engine::TokenBucket::new(bytes_per_sec)))
    }

    /// Most bytes to hand out per read, so that no single sleep is long
    /// (about 50 ms of the rate).
    pub(crate) fn max_read(&self) -> usize {
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let n = (self.0.rate() / 20.0) as usize;
        n.max(4096)
    }

    /// Accounts for `n` bytes read; sleeps as long as the rate requires.
    pub(crate) fn take(&self, n: usize) {
        let wait = self.0.take(n);
        if !wait.is_zero() {
            std::thread::sleep(wait);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_qdrant::{LocalShardInfo, RemoteShardInfo};

    fn view(peer: u64, local: &[(u32, u64)], remote: &[(u32, u64)]) -> CollectionClusterInfo {
        CollectionClusterInfo {
            peer_id: peer,
            shard_count: 3,
            local_shards: local
                .iter()
                .map(|&(id, pts)| LocalShardInfo {
                    shard_id: id,
                    shard_key: None,
                    points_count: pts,
                    state: ReplicaState::Active,
                })
                .collect(),
            remote_shards: remote
                .iter()
                .map(|&(id, p)| RemoteShardInfo {
                    shard_id: id,
                    shard_key: None,
                    peer_id: p,
                    state: ReplicaState::Active,
                })
                .collect(),
            shard_transfers: Vec::new(),
        }
    }

    #[test]
    fn placement_merges_local_and_remote_views() {
        // Node 1 (peer 10) holds shards 0 and 2; node 2 (peer 20) holds 1 and 2;
        // peer 30 (unreachable) holds 0 and 1.
        let p = Placement {
            views: vec![
                view(10, &[(0, 5), (2, 7)], &[(0, 30), (1, 30), (1, 20), (2, 20)]),
                view(20, &[(1, 6), (2, 7)], &[(0, 10), (0, 30), (1, 30), (2, 10)]),
            ],
        };
        let shards = p.shards();
        assert_eq!(shards.len(), 3);
        let s0: Vec<(u64, Option<usize>, Option<u64>)> = shards[0]
            .replicas
            .iter()
            .map(|r| (r.peer_id, r.node, r.points))
            .collect();
        assert_eq!(s0, vec![(10, Some(0), Some(5)), (30, None, None)]);
        let s2: Vec<Option<usize>> = shards[2].replicas.iter().map(|r| r.node).collect();
        assert_eq!(s2, vec![Some(0), Some(1)]);
        assert!(p.not_active().is_empty());
    }

    #[test]
    fn rate_limiter_paces_reads() {
        let l = RateLimiter::new(1024 * 1024);
        let t = Instant::now();
        for _ in 0..4 {
            l.take(256 * 1024);
        }
        // 1 MiB at 1 MiB/s with a 100 KiB burst: most of a second.
        assert!(
            t.elapsed() >= Duration::from_millis(800),
            "{:?}",
            t.elapsed()
        );
    }
}
