//! etcd's Cluster and Maintenance services: the members are the proxies (so a client balances
//! over regions), Status answers for this proxy; everything that would change membership or
//! storage is `UNIMPLEMENTED` with the reason.
use super::{id_of, Edge, VERSION};
use etcd_client::proto::{
    PbAlarmRequest, PbAlarmResponse, PbClusterService, PbDefragmentRequest, PbDefragmentResponse,
    PbDowngradeRequest, PbDowngradeResponse, PbHashKvRequest, PbHashKvResponse, PbHashRequest,
    PbHashResponse, PbMaintenanceService, PbMember, PbMemberAddRequest, PbMemberAddResponse,
    PbMemberListRequest, PbMemberListResponse, PbMemberPromoteRequest, PbMemberPromoteResponse,
    PbMemberRemoveRequest, PbMemberRemoveResponse, PbMemberUpdateRequest, PbMemberUpdateResponse,
    PbMoveLeaderRequest, PbMoveLeaderResponse, PbSnapshotRequest, PbSnapshotResponse,
    PbStatusRequest, PbStatusResponse,
};
use tonic::{Request, Response, Status};

pub struct ClusterService(pub Edge);
pub struct MaintenanceService(pub Edge);

fn members_are_proxies(what: &str) -> Status {
    Status::unimplemented(format!(
        "{what}: etcd members here are Meridian's proxies, set by cluster.toml ([[proxy]]), not by the etcd API"
    ))
}

#[tonic::async_trait]
impl PbClusterService for ClusterService {
    async fn member_add(
        &self,
        _r: Request<PbMemberAddRequest>,
    ) -> Result<Response<PbMemberAddResponse>, Status> {
        Err(members_are_proxies("MemberAdd"))
    }
    async fn member_remove(
        &self,
        _r: Request<PbMemberRemoveRequest>,
    ) -> Result<Response<PbMemberRemoveResponse>, Status> {
        Err(members_are_proxies("MemberRemove"))
    }
    async fn member_update(
        &self,
        _r: Request<PbMemberUpdateRequest>,
    ) -> Result<Response<PbMemberUpdateResponse>, Status> {
        Err(members_are_proxies("MemberUpdate"))
    }
    async fn member_list(
        &self,
        _r: Request<PbMemberListRequest>,
    ) -> Result<Response<PbMemberListResponse>, Status> {
        Ok(Response::new(PbMemberListResponse {
            header: self.0.header(0),
            members: self
                .0
                .members
                .iter()
                .map(|m| PbMember {
                    id: id_of(&m.name),
                    name: m.name.clone(),
                    peer_ur_ls: Vec::new(),
                    client_ur_ls: vec![m.url.clone()],
                    is_learner: false,
                })
                .collect(),
        }))
    }
    async fn member_promote(
        &self,
        _r: Request<PbMemberPromoteRequest>,
    ) -> Result<Response<PbMemberPromoteResponse>, Status> {
        Err(members_are_proxies("MemberPromote"))
    }
}

type Snapshots = std::pin::Pin<
    Box<dyn futures::Stream<Item = Result<PbSnapshotResponse, Status>> + Send + 'static>,
>;

#[tonic::async_trait]
impl PbMaintenanceService for MaintenanceService {
    async fn alarm(
        &self,
        _r: Request<PbAlarmRequest>,
    ) -> Result<Response<PbAlarmResponse>, Status> {
        // No alarm is ever raised (disk-full stops a replica instead: `meridian status`).
        Ok(Response::new(PbAlarmResponse {
            header: self.0.header(0),
            alarms: Vec::new(),
        }))
    }
    async fn status(
        &self,
        _r: Request<PbStatusRequest>,
    ) -> Result<Response<PbStatusResponse>, Status> {
        Ok(Response::new(PbStatusResponse {
            header: self.0.header(0),
            version: VERSION.to_string(),
            // Every proxy reaches the leaders; it names itself, as a single-member etcd would.
            leader: self.0.member_id(),
            ..Default::default()
        }))
    }
    async fn defragment(
        &self,
        _r: Request<PbDefragmentRequest>,
    ) -> Result<Response<PbDefragmentResponse>, Status> {
        Err(Status::unimplemented(
            "Defragment: the replicas' write-ahead logs compact themselves",
        ))
    }
    async fn hash(&self, _r: Request<PbHashRequest>) -> Result<Response<PbHashResponse>, Status> {
        Err(Status::unimplemented(
            "Hash: use `meridian status` (a state digest per shard and replica)",
        ))
    }
    async fn hash_kv(
        &self,
        _r: Request<PbHashKvRequest>,
    ) -> Result<Response<PbHashKvResponse>, Status> {
        Err(Status::unimplemented(
            "HashKV: use `meridian status` (a state digest per shard and replica)",
        ))
    }
    type SnapshotStream = Snapshots;
    async fn snapshot(
        &self,
        _r: Request<PbSnapshotRequest>,
    ) -> Result<Response<Snapshots>, Status> {
        Err(Status::unimplemented(
            "Snapshot: back up a replica's data directory instead",
        ))
    }
    async fn move_leader(
        &self,
        _r: Request<PbMoveLeaderRequest>,
    ) -> Result<Response<PbMoveLeaderResponse>, Status> {
        Err(Status::unimplemented(
            "MoveLeader: leaders are placed per shard by cluster.toml (preferred_leader, shard_leaders)",
        ))
    }
    async fn downgrade(
        &self,
        _r: Request<PbDowngradeRequest>,
    ) -> Result<Response<PbDowngradeResponse>, Status> {
        Err(Status::unimplemented("Downgrade: not applicable"))
    }
}
