//! Phase 3: image transfer. Images move in BLAKE3-checked chunks; the Raft state records which nodes
//! hold a verified copy, so any node can pull an image straight from a peer that has it.

use std::sync::Arc;
use std::time::Instant;

use duet::{BoxStream, Request, Response, Status, Streaming, Transport};

use crate::ctx::{Ctx, rejected};
use crate::images::{Download, Stored, hex};
use crate::pb::orchestrator::v1::{
    FetchImageRequest, ImageChunk, ImageHeader, ImageInfo, ImageService, ImageServiceClient, ListImagesReply,
    ListImagesRequest, PullImageRequest,
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
    /// Refuses an image of a name the cluster knows with other content, so a verified copy this node
    /// holds is never overwritten by bytes the cluster will reject.
    fn check_known(&self, name: &str, size: u64, blake3: &[u8]) -> Result<(), Status> {
        if let Some(known) = self.0.state().images.get(name)
            && (known.blake3[..] != *blake3 || known.size != size)
        {
            return Err(Status::already_exists(format!(
                "image {name:?} exists with other content (size {}, BLAKE3 {}); upload it under another name",
                known.size,
                hex(&known.blake3)
            )));
        }
        Ok(())
    }

    /// Records this node as a holder of an image it stored and verified. Stored first: once the
    /// cluster lists this node as a holder, peers may fetch from it at once.
    async fn hold(&self, image: Stored) -> Result<ImageInfo, Status> {
        let command =
            Command::AddImageHolder { name: image.name, size: image.size, blake3: image.blake3, holder: self.0.id };
        match self.0.propose(command, false).await? {
            Outcome::Image(record) => {
                tracing::info!(node = self.0.id, image = %record.name, size = record.size, "holding a verified image");
                Ok(info(&record))
            }
            Outcome::Rejected { kind, message } => Err(rejected(kind, message)),
            other => Err(Status::internal(format!("unexpected outcome {other:?}"))),
        }
    }

    /// Fetches what `download` lacks of `record` from one holder, from the end of the prefix already
    /// verified (by an earlier holder, or an earlier pull), checking every chunk as it comes. What
    /// arrives verified stays when the holder fails midway.
    async fn fetch_from(
        &self,
        holder: u64,
        ticket: &str,
        record: &ImageRecord,
        download: &mut Download,
    ) -> Result<(), Status> {
        let ctx = &self.0;
        let client = ImageServiceClient::new(ctx.peers.channel(ticket)?)
            .with_default_timeout(ctx.rpc_timeout * 100)
            .max_decoding_message_size(crate::images::CHUNK_SIZE * 2);
        let offset = download.verified();
        let labels = [("image", record.name.clone()), ("holder", holder.to_string())];
        if offset > 0 {
            metrics::counter!("orchestrator_image_fetch_resumes_total", &labels).increment(1);
        }
        tracing::info!(holder, image = %record.name, offset, size = record.size, "fetching an image from a holder");
        let started = Instant::now();
        let result = async {
            let request = FetchImageRequest { name: record.name.clone(), offset };
            let response = client.fetch_image(request).await?;
            let transport = response.extensions().get::<Transport>().copied();
            download.receive(response.into_inner()).await?;
            Ok(transport)
        }
        .await;
        let fetched = download.verified().saturating_sub(offset);
        metrics::counter!("orchestrator_image_fetch_bytes_total", &labels).increment(fetched);
        let transport = result.as_ref().ok().and_then(|t| *t);
        ctx.calls.record("4 peer connector", "ImageService/FetchImage", transport, started.elapsed());
        result.map(|_| ())
    }
}

impl ImageService for ImageServiceImpl {
    async fn upload_image(&self, request: Request<Streaming<ImageChunk>>) -> Result<Response<ImageInfo>, Status> {
        let check = |header: &ImageHeader| self.check_known(&header.name, header.size, &header.blake3);
        let image = self.0.images.upload(request.into_inner(), check).await?;
        Ok(Response::new(self.hold(image).await?))
    }

    async fn fetch_image(
        &self,
        request: Request<FetchImageRequest>,
    ) -> Result<Response<BoxStream<ImageChunk>>, Status> {
        let FetchImageRequest { name, offset } = request.into_inner();
        let chunks = self.0.images.fetch(&name, offset)?.ok_or_else(|| {
            Status::not_found(format!("node {} holds no image {name:?}; PullImage fetches it from a holder", self.0.id))
        })?;
        Ok(Response::new(chunks))
    }

    /// Pulls through the holders in turn, each asked only for what the ones before did not deliver;
    /// a pull that fails everywhere leaves its verified prefix (on disk, with a data dir) for the next.
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
        let Some(mut download) = self.0.images.begin_pull(&name, record.size, record.blake3).await? else {
            // Another pull of it finished while this one waited its turn.
            let stored = Stored { name: name.clone(), size: record.size, blake3: record.blake3 };
            return Ok(Response::new(self.hold(stored).await?));
        };
        let members = self.0.members();
        let mut last = Status::unavailable(format!("no holder of image {name:?} is a member"));
        for holder in record.holders.iter().filter(|h| **h != self.0.id) {
            if download.is_complete() {
                break;
            }
            let Some((_, member, _)) = members.iter().find(|(id, _, _)| id == holder) else { continue };
            if let Err(e) = self.fetch_from(*holder, &member.ticket, &record, &mut download).await {
                tracing::warn!(
                    holder,
                    image = %name,
                    verified = download.verified(),
                    error = %e,
                    "pull from holder failed; trying the next from what is verified"
                );
                last = e;
            }
        }
        if !download.is_complete() {
            return Err(last);
        }
        let check = || self.check_known(&record.name, record.size, &record.blake3);
        let stored = self.0.images.keep(download, check).await?;
        Ok(Response::new(self.hold(stored).await?))
    }

    async fn list_images(&self, _: Request<ListImagesRequest>) -> Result<Response<ListImagesReply>, Status> {
        let images = self.0.state().images.values().map(info).collect();
        Ok(Response::new(ListImagesReply { images }))
    }
}
