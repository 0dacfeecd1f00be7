//! Phase 3: image transfer. Images move in BLAKE3-checked chunks; the Raft state records which nodes
//! hold a verified copy, so any node can pull an image straight from a peer that has it.

use std::sync::Arc;
use std::time::Instant;

use duet::{BoxStream, Request, Response, Status, Streaming, Transport};
use futures_util::StreamExt;

use crate::ctx::{Ctx, rejected};
use crate::images::{Image, hex};
use crate::pb::orchestrator::v1::{
    FetchImageRequest, ImageChunk, ImageInfo, ImageService, ImageServiceClient, ListImagesReply, ListImagesRequest,
    PullImageRequest,
};
use crate::state::{Command, ImageRecord, Outcome};

/// `orchestrator.v1.ImageService`.
#[derive(Debug, Clone)]
pub struct ImageServiceImpl(pub Arc<Ctx>);

fn info(record: &ImageRecord) -> ImageInfo {
    ImageInfo {
        name: record.name.clone(),
        size: record.size,
        blake3_hex: hex(&record.blake3),
        holders: record.holders.iter().copied().collect(),
    }
}

impl ImageServiceImpl {
    /// Keeps a verified image and records this node as a holder.
    async fn hold(&self, image: Image) -> Result<ImageInfo, Status> {
        let command = Command::AddImageHolder {
            name: image.name.clone(),
            size: image.bytes.len() as u64,
            blake3: image.blake3,
            holder: self.0.id,
        };
        // An image of this name with other content is refused before anything is stored, so a
        // verified copy this node holds is never overwritten by bytes the cluster will reject.
        if let Some(known) = self.0.state().images.get(&image.name)
            && (known.blake3 != image.blake3 || known.size != image.bytes.len() as u64)
        {
            return Err(Status::already_exists(format!(
                "image {:?} exists with other content (size {}, BLAKE3 {}); upload it under another name",
                image.name,
                known.size,
                hex(&known.blake3)
            )));
        }
        // Stored first: once the cluster lists this node as a holder, peers may fetch from it at once.
        self.0.images.insert(image);
        match self.0.propose(command, false).await? {
            Outcome::Image(record) => Ok(info(&record)),
            Outcome::Rejected { kind, message } => Err(rejected(kind, message)),
            other => Err(Status::internal(format!("unexpected outcome {other:?}"))),
        }
    }

    /// Fetches `record` from one holder, checking every chunk and the whole image against the record.
    async fn fetch_from(&self, holder: u64, ticket: &str, record: &ImageRecord) -> Result<Image, Status> {
        let ctx = &self.0;
        let client = ImageServiceClient::new(ctx.peers.channel(ticket)?)
            .with_default_timeout(ctx.rpc_timeout * 100)
            .max_decoding_message_size(crate::images::CHUNK_SIZE * 2);
        let started = Instant::now();
        let result = async {
            let response = client.fetch_image(FetchImageRequest { name: record.name.clone() }).await?;
            let transport = response.extensions().get::<Transport>().copied();
            let image = ctx.images.receive(response.into_inner()).await?;
            if image.blake3 != record.blake3 {
                return Err(Status::data_loss(format!(
                    "node {holder} sent image {:?} with BLAKE3 {}, the cluster recorded {}",
                    record.name,
                    hex(&image.blake3),
                    hex(&record.blake3)
                )));
            }
            Ok((image, transport))
        }
        .await;
        let transport = result.as_ref().ok().and_then(|(_, t)| *t);
        ctx.calls.record("4 peer connector", "ImageService/FetchImage", transport, started.elapsed());
        result.map(|(image, _)| image)
    }
}

impl ImageService for ImageServiceImpl {
    async fn upload_image(&self, request: Request<Streaming<ImageChunk>>) -> Result<Response<ImageInfo>, Status> {
        let image = self.0.images.receive(request.into_inner()).await?;
        Ok(Response::new(self.hold(image).await?))
    }

    async fn fetch_image(
        &self,
        request: Request<FetchImageRequest>,
    ) -> Result<Response<BoxStream<ImageChunk>>, Status> {
        let name = request.into_inner().name;
        let image = self.0.images.get(&name).ok_or_else(|| {
            Status::not_found(format!("node {} holds no image {name:?}; PullImage fetches it from a holder", self.0.id))
        })?;
        Ok(Response::new(Box::pin(image.chunks().map(Ok))))
    }

    async fn pull_image(&self, request: Request<PullImageRequest>) -> Result<Response<ImageInfo>, Status> {
        let name = request.into_inner().name;
        let known = |ctx: &Ctx| ctx.state().images.get(&name).cloned();
        // An image uploaded through another node a moment ago may not be applied here yet.
        let record = match known(&self.0) {
            Some(record) => record,
            None => {
                self.0.catch_up().await?;
                known(&self.0).ok_or_else(|| Status::not_found(format!("the cluster knows no image {name:?}")))?
            }
        };
        if record.holders.contains(&self.0.id) && self.0.images.holds(&name, &record.blake3) {
            return Ok(Response::new(info(&record)));
        }
        let members = self.0.members();
        let mut last = Status::unavailable(format!("no holder of image {name:?} is a member"));
        for holder in record.holders.iter().filter(|h| **h != self.0.id) {
            let Some((_, member, _)) = members.iter().find(|(id, _, _)| id == holder) else { continue };
            match self.fetch_from(*holder, &member.ticket, &record).await {
                Ok(image) => return Ok(Response::new(self.hold(image).await?)),
                Err(e) => {
                    tracing::warn!(holder, image = %name, error = %e, "pull from holder failed; trying the next");
                    last = e;
                }
            }
        }
        Err(last)
    }

    async fn list_images(&self, _: Request<ListImagesRequest>) -> Result<Response<ListImagesReply>, Status> {
        let images = self.0.state().images.values().map(info).collect();
        Ok(Response::new(ListImagesReply { images }))
    }
}
