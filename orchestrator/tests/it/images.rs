//! Image transfer between nodes: a 32 MiB image uploaded to one node and pulled by another straight
//! from it, checked by BLAKE3 end to end; a corrupted chunk refused without hurting the connection.

use std::time::Duration;

use bytes::Bytes;
use duet::TransportConfig;
use duet_orchestrator::client::{NodeChannel, Via};
use duet_orchestrator::cluster::Cluster;
use duet_orchestrator::config::NodeConfig;
use duet_orchestrator::images::{Image, ImageStore, hex};
use duet_orchestrator::pb::orchestrator::v1::{
    FetchImageRequest, ImageServiceClient, ListImagesRequest, PullImageRequest,
};
use futures_util::StreamExt;

fn image(name: &str, len: usize, seed: u8) -> Image {
    let bytes: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 11) as u8).collect();
    Image::new(name, Bytes::from(bytes))
}

async fn client(cluster: &Cluster, id: u64, via: Via, transport: &TransportConfig) -> ImageServiceClient {
    let conn = NodeChannel::connect(&cluster.node(id).ticket(), via, transport).await.expect("client channel");
    ImageServiceClient::new(conn.channel)
        .with_default_timeout(Duration::from_secs(120))
        .max_decoding_message_size(4 << 20)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_32_mib_image_moves_between_nodes_with_its_hash_checked() {
    let transport = NodeConfig::embedded(1).transport;
    let cluster = Cluster::start(3, |_| {}, None).await.expect("cluster starts");
    cluster.leader(Duration::from_secs(20)).await.expect("a leader");
    let original = image("big.img", 32 << 20, 7);

    let to_node2 = client(&cluster, 2, Via::Auto, &transport).await;
    let info = to_node2.upload_image(original.chunks()).await.expect("upload").into_inner();
    assert_eq!((info.size, info.blake3_hex.clone(), info.holders.clone()), (32 << 20, hex(&original.blake3), vec![2]));

    // Node 3 fetches it from node 2 itself, over the peer connector.
    let to_node3 = client(&cluster, 3, Via::Auto, &transport).await;
    let pulled = to_node3.pull_image(PullImageRequest { name: "big.img".into() }).await.expect("pull").into_inner();
    assert_eq!(pulled.holders, vec![2, 3]);
    let fetched =
        cluster.calls().rows().into_iter().find(|r| r.call == "ImageService/FetchImage").expect("a peer fetch");
    assert_ne!(fetched.transport, "failed");

    // What node 3 now serves is byte for byte the original.
    let stream = to_node3.fetch_image(FetchImageRequest { name: "big.img".into() }).await.expect("fetch").into_inner();
    let copy = ImageStore::new(1 << 30).receive(stream).await.expect("node 3's copy verifies");
    assert_eq!(copy.bytes, original.bytes);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_corrupted_chunk_is_refused_and_the_connection_survives() {
    let transport = NodeConfig::embedded(1).transport;
    let cluster = Cluster::start(3, |_| {}, None).await.expect("cluster starts");
    cluster.leader(Duration::from_secs(20)).await.expect("a leader");
    for via in [Via::Grpc, Via::Iroh] {
        let node2 = client(&cluster, 2, via, &transport).await;
        let good = image("good.img", 3 << 20, 1);
        let mut chunks: Vec<_> = image("bad.img", 4 << 20, 2).chunks().collect().await;
        let mut data = chunks[2].data.to_vec();
        data[12345] ^= 0x40;
        chunks[2].data = data.into();
        let err = node2.upload_image(futures_util::stream::iter(chunks)).await.expect_err("corruption refused");
        assert_eq!(err.code(), duet::Code::DataLoss, "{via:?}: {err}");
        assert!(err.message().contains("offset 2097152"), "{err}");

        // The same client goes on: the good image uploads, the bad one was never registered.
        node2.upload_image(good.chunks()).await.expect("a good upload after the bad one");
        let listed = node2.list_images(ListImagesRequest {}).await.expect("list").into_inner().images;
        assert!(listed.iter().any(|i| i.name == "good.img"));
        assert!(!listed.iter().any(|i| i.name == "bad.img"), "{listed:?}");
    }
    cluster.shutdown().await;
}
