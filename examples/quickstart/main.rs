//! The README's quick start, compiled with the workspace so it cannot rot.

#![forbid(unsafe_code)]

use duet::{BoxStream, Channel, Request, Response, Server, Status, Transport};
use duet_examples::pb::grpc::health::v1::health_check_response::ServingStatus;
use duet_examples::pb::grpc::health::v1::{
    Health, HealthCheckRequest, HealthCheckResponse, HealthClient, HealthServer,
};

struct AlwaysServing;

// One impl of the generated trait: plain async fns, no associated stream types.
impl Health for AlwaysServing {
    async fn check(&self, _: Request<HealthCheckRequest>) -> Result<Response<HealthCheckResponse>, Status> {
        Ok(Response::new(HealthCheckResponse { status: ServingStatus::Serving as i32 }))
    }

    async fn watch(
        &self,
        req: Request<HealthCheckRequest>,
    ) -> Result<Response<BoxStream<HealthCheckResponse>>, Status> {
        let now = self.check(req).await?.into_inner();
        Ok(Response::new(Box::pin(futures_util::stream::iter([Ok(now)]))))
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Serve the one impl on gRPC (TCP) and Iroh (QUIC) at once; offline endpoint on 127.0.0.1.
    let server = Server::builder()
        .grpc("127.0.0.1:0".parse()?)
        .iroh(duet::iroh::endpoint::bind_loopback().await?)
        .add_service(HealthServer::new(AlwaysServing))
        .serve()
        .await?;
    let peer = server.peer_addr(); // printable: duet:grpc=…;iroh=…

    // The same generated client over either transport.
    let grpc = Channel::connect_grpc(peer.grpc_uri().unwrap()).await?;
    let connector = duet::iroh::Connector::new(duet::iroh::endpoint::bind_loopback().await?);
    let iroh = Channel::iroh(&connector, peer.iroh.clone().unwrap());
    for channel in [grpc, iroh] {
        let health = HealthClient::new(channel);
        let reply = health.check(HealthCheckRequest::default()).await?;
        let transport = reply.extensions().get::<Transport>().unwrap();
        println!("{:?} over {transport}", reply.get_ref().status());
    }
    server.shutdown().await;
    Ok(())
}
