//! etcd's Lease service, registered so that a client calling it learns why it fails
//! (`UNIMPLEMENTED` with the reason) instead of meeting an unknown service.
use etcd_client::proto::{
    PbLeaseGrantRequest, PbLeaseGrantResponse, PbLeaseKeepAliveRequest, PbLeaseKeepAliveResponse,
    PbLeaseLeasesRequest, PbLeaseLeasesResponse, PbLeaseRevokeRequest, PbLeaseRevokeResponse,
    PbLeaseService, PbLeaseTimeToLiveRequest, PbLeaseTimeToLiveResponse,
};
use tonic::{Request, Response, Status, Streaming};

pub struct LeaseService;

type Stream<T> = std::pin::Pin<Box<dyn futures::Stream<Item = Result<T, Status>> + Send + 'static>>;

fn no_lease() -> Status {
    Status::unimplemented(
        "TTL leases are not built yet in Meridian's etcd API (so neither are etcdctl lock and elect)",
    )
}

#[tonic::async_trait]
impl PbLeaseService for LeaseService {
    async fn lease_grant(
        &self,
        _r: Request<PbLeaseGrantRequest>,
    ) -> Result<Response<PbLeaseGrantResponse>, Status> {
        Err(no_lease())
    }
    async fn lease_revoke(
        &self,
        _r: Request<PbLeaseRevokeRequest>,
    ) -> Result<Response<PbLeaseRevokeResponse>, Status> {
        Err(no_lease())
    }
    type LeaseKeepAliveStream = Stream<PbLeaseKeepAliveResponse>;
    async fn lease_keep_alive(
        &self,
        _r: Request<Streaming<PbLeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        Err(no_lease())
    }
    async fn lease_time_to_live(
        &self,
        _r: Request<PbLeaseTimeToLiveRequest>,
    ) -> Result<Response<PbLeaseTimeToLiveResponse>, Status> {
        Err(no_lease())
    }
    async fn lease_leases(
        &self,
        _r: Request<PbLeaseLeasesRequest>,
    ) -> Result<Response<PbLeaseLeasesResponse>, Status> {
        Err(no_lease())
    }
}
