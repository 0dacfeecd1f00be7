//! Compression with tonic's semantics on gRPC, Iroh and Dual: negotiated, refused, not accepted, and
//! a decompression bomb in each direction.

use std::sync::{Arc, Mutex};

use duet::{Code, CompressionEncoding, Request, Server};
use duet_tests::harness::{self, Running, VIAS};
use duet_tests::pb::matrix::v1::{CountRequest, EchoRequest, KindsClient, KindsServer};
use duet_tests::services::KindsImpl;
use futures_util::StreamExt;

const GZIP: CompressionEncoding = CompressionEncoding::Gzip;
const ZSTD: CompressionEncoding = CompressionEncoding::Zstd;

/// Serves `Kinds` with `server`'s compression; records each request's `grpc-encoding`.
async fn start(server: Server) -> (Running, Arc<Mutex<Vec<Option<String>>>>) {
    let seen = Arc::new(Mutex::new(vec![]));
    let log = seen.clone();
    let server = server
        .interceptor(move |req: Request<()>| {
            let encoding = req.metadata().get("grpc-encoding").map(|v| v.to_str().unwrap().to_owned());
            log.lock().unwrap().push(encoding);
            Ok(req)
        })
        .add_service(KindsServer::new(KindsImpl::default()));
    (harness::serve(server).await, seen)
}

fn echo(text: String) -> EchoRequest {
    EchoRequest { text, ..Default::default() }
}

fn encoding<T>(resp: &duet::Response<T>) -> Option<&str> {
    resp.metadata().get("grpc-encoding").map(|v| v.to_str().unwrap())
}

#[tokio::test]
async fn gzip_and_zstd_are_negotiated_both_ways_on_every_transport() {
    for e in [GZIP, ZSTD] {
        let name = if e == GZIP { "gzip" } else { "zstd" };
        let (running, seen) = start(Server::builder().accept_compressed(e).send_compressed(e)).await;
        for via in VIAS {
            seen.lock().unwrap().clear();
            let client = KindsClient::new(running.via(via)).send_compressed(e).accept_compressed(e);
            let text = "compressible ".repeat(10_000);
            let reply = client.echo(echo(text.clone())).await.unwrap_or_else(|s| panic!("{via} {name}: {s:?}"));
            assert_eq!(reply.get_ref().text, text, "{via} {name}");
            assert_eq!(encoding(&reply), Some(name), "{via} {name}: the response came compressed");
            let stream = client.count(CountRequest { count: 5 }).await.unwrap();
            assert_eq!(encoding(&stream), Some(name), "{via} {name}: the response stream too");
            assert_eq!(stream.into_inner().filter(|r| std::future::ready(r.is_ok())).count().await, 5);
            let requests = futures_util::stream::iter(["a", "b", "c"].map(|t| echo(t.into())));
            let joined = client.join(requests).await.unwrap();
            assert_eq!(joined.get_ref().text, "a,b,c", "{via} {name}: a compressed request stream");
            let seen = seen.lock().unwrap().clone();
            assert_eq!(seen, vec![Some(name.to_owned()); 3], "{via} {name}: every request went compressed");
        }
        running.stop().await;
    }
}

#[tokio::test]
async fn a_peer_that_does_not_accept_gets_plain_messages_and_an_encoding_not_accepted_is_refused() {
    let (running, seen) = start(Server::builder().accept_compressed(GZIP).send_compressed(GZIP)).await;
    for via in VIAS {
        seen.lock().unwrap().clear();
        // Accepts nothing, sends plain: the server answers plain.
        let plain = KindsClient::new(running.via(via));
        let reply = plain.echo(echo("x".repeat(5000))).await.unwrap();
        assert_eq!(encoding(&reply), None, "{via}");
        assert_eq!(*seen.lock().unwrap(), vec![None], "{via}");

        // Sends zstd, which the server does not accept: refused before the handler runs.
        let zstd = KindsClient::new(running.via(via)).send_compressed(ZSTD);
        let refused = zstd.echo(echo("y".repeat(5000))).await.expect_err("zstd is not accepted");
        assert_eq!(refused.code(), Code::Unimplemented, "{via}: {refused:?}");
        assert!(refused.message().contains("zstd"), "{via}: {}", refused.message());

        // Accepts zstd only: the server's gzip is not acceptable, so it answers plain.
        let other = KindsClient::new(running.via(via)).accept_compressed(ZSTD);
        let reply = other.echo(echo("z".repeat(5000))).await.unwrap();
        assert_eq!(encoding(&reply), None, "{via}");
    }
    running.stop().await;
}

#[tokio::test]
async fn a_request_that_inflates_past_the_servers_limit_is_resource_exhausted_and_the_channel_survives() {
    let server = Server::builder().accept_compressed(GZIP).max_decoding_message_size(1 << 20);
    let (running, _) = start(server).await;
    for via in VIAS {
        let client = KindsClient::new(running.via(via)).send_compressed(GZIP);
        // 32 MiB of one letter: a few tens of KiB once compressed, far past the 1 MiB limit inflated.
        let bomb = client.echo(echo("a".repeat(32 << 20))).await.expect_err("over the limit");
        assert_eq!(bomb.code(), Code::ResourceExhausted, "{via}: {bomb:?}");
        let ok = client.echo(echo("after".into())).await.unwrap_or_else(|s| panic!("{via}: {s:?}"));
        assert_eq!(ok.get_ref().text, "after", "{via}: the connection and later calls survive");
    }
    running.stop().await;
}

#[tokio::test]
async fn a_response_that_inflates_past_the_clients_limit_is_resource_exhausted() {
    let server = Server::builder().accept_compressed(GZIP).send_compressed(GZIP).max_decoding_message_size(64 << 20);
    let (running, _) = start(server).await;
    for via in VIAS {
        let client = KindsClient::new(running.via(via))
            .send_compressed(GZIP)
            .accept_compressed(GZIP)
            .max_decoding_message_size(1 << 20);
        let bomb = client.echo(echo("b".repeat(16 << 20))).await.expect_err("over the client's limit");
        assert_eq!(bomb.code(), Code::ResourceExhausted, "{via}: {bomb:?}");
        let ok = client.echo(echo("after".into())).await.unwrap_or_else(|s| panic!("{via}: {s:?}"));
        assert_eq!(ok.get_ref().text, "after", "{via}");
    }
    running.stop().await;
}
