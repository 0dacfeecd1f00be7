//! `#[duet::service]`: plain async fns, streams without associated types or boxing, served on both
//! transports.

use duet::{Request, Response, Server, Status, Streaming, Transport};
use duet_tests::harness::{self, TRANSPORTS};
use duet_tests::pb::matrix::v1::{CountRequest, EchoReply, EchoRequest, Kinds, KindsClient, KindsServer};
use futures_util::{Stream, StreamExt};

struct WithStreams;

#[duet::service]
impl Kinds for WithStreams {
    async fn echo(&self, request: Request<EchoRequest>) -> Result<Response<EchoReply>, Status> {
        Ok(Response::new(EchoReply { text: request.into_inner().text, index: 0 }))
    }

    async fn record(&self, request: Request<EchoRequest>) -> Result<Response<EchoReply>, Status> {
        self.echo(request).await
    }

    // `impl Stream`, no associated type, no Box::pin.
    async fn count(
        &self,
        request: Request<CountRequest>,
    ) -> Result<Response<impl Stream<Item = Result<EchoReply, Status>> + Send + 'static>, Status> {
        let n = request.into_inner().count;
        if n > 1000 {
            return Err(Status::invalid_argument("at most 1000"));
        }
        Ok(Response::new(futures_util::stream::iter((0..n).map(|i| Ok(EchoReply { text: String::new(), index: i })))))
    }

    async fn join(&self, request: Request<Streaming<EchoRequest>>) -> Result<Response<EchoReply>, Status> {
        let texts: Vec<String> = request
            .into_inner()
            .map(|r| r.map(|r| r.text))
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<_, _>>()?;
        Ok(Response::new(EchoReply { index: texts.len() as u32, text: texts.join("+") }))
    }

    // A channel receiver.
    async fn chat(
        &self,
        request: Request<Streaming<EchoRequest>>,
    ) -> Result<Response<tokio::sync::mpsc::Receiver<Result<EchoReply, Status>>>, Status> {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let mut requests = request.into_inner();
        tokio::spawn(async move {
            while let Some(Ok(r)) = requests.next().await {
                if tx.send(Ok(EchoReply { text: r.text.repeat(2), index: 0 })).await.is_err() {
                    break;
                }
            }
        });
        Ok(Response::new(rx))
    }
}

struct WithVec;

#[duet::service]
impl Kinds for WithVec {
    async fn echo(&self, _: Request<EchoRequest>) -> Result<Response<EchoReply>, Status> {
        Err(Status::unimplemented("vec only"))
    }

    async fn record(&self, _: Request<EchoRequest>) -> Result<Response<EchoReply>, Status> {
        Err(Status::unimplemented("vec only"))
    }

    // A Vec.
    async fn count(&self, request: Request<CountRequest>) -> Result<Response<Vec<EchoReply>>, Status> {
        let n = request.into_inner().count;
        Ok(Response::new((0..n).map(|i| EchoReply { text: "v".into(), index: i }).collect()))
    }

    async fn join(&self, _: Request<Streaming<EchoRequest>>) -> Result<Response<EchoReply>, Status> {
        Err(Status::unimplemented("vec only"))
    }

    async fn chat(
        &self,
        _: Request<Streaming<EchoRequest>>,
    ) -> Result<Response<tokio::sync::mpsc::UnboundedReceiver<Result<EchoReply, Status>>>, Status> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tx.send(Ok(EchoReply { text: "only".into(), index: 0 })).unwrap();
        Ok(Response::new(rx))
    }
}

fn text(t: &str) -> EchoRequest {
    EchoRequest { text: t.into(), ..Default::default() }
}

#[tokio::test]
async fn macro_impls_serve_every_kind_on_both_transports() {
    let server = KindsServer::new(WithStreams);
    let running = harness::serve(Server::builder().add_service(server)).await;
    for t in TRANSPORTS {
        let c = KindsClient::new(running.channel(t));
        assert_eq!(c.echo(text("hi")).await.unwrap().into_inner().text, "hi");
        let counted: Vec<u32> =
            c.count(CountRequest { count: 4 }).await.unwrap().into_inner().map(|r| r.unwrap().index).collect().await;
        assert_eq!(counted, [0, 1, 2, 3], "{t}");
        assert_eq!(c.count(CountRequest { count: 5000 }).await.unwrap_err().code(), duet::Code::InvalidArgument);
        let joined = c.join(futures_util::stream::iter([text("a"), text("b")])).await.unwrap().into_inner();
        assert_eq!(joined.text, "a+b");
        let chat: Vec<String> = c
            .chat(futures_util::stream::iter([text("x"), text("yz")]))
            .await
            .unwrap()
            .into_inner()
            .map(|r| r.unwrap().text)
            .collect()
            .await;
        assert_eq!(chat, ["xx", "yzyz"], "{t}");
        assert_eq!(c.echo(text("on")).await.unwrap().extensions().get::<Transport>(), Some(&t));
    }
    running.stop().await;

    let running = harness::serve(Server::builder().add_service(KindsServer::new(WithVec))).await;
    for t in TRANSPORTS {
        let c = KindsClient::new(running.channel(t));
        let counted: Vec<u32> =
            c.count(CountRequest { count: 3 }).await.unwrap().into_inner().map(|r| r.unwrap().index).collect().await;
        assert_eq!(counted, [0, 1, 2], "{t}");
        let chat: Vec<String> =
            c.chat(futures_util::stream::empty()).await.unwrap().into_inner().map(|r| r.unwrap().text).collect().await;
        assert_eq!(chat, ["only"], "{t}");
    }
    running.stop().await;
}
