//! One middleware stack on both transports: server interceptors and layers, client interceptors and
//! layers, extensions, server metrics and trace context, over gRPC, Iroh and Dual.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use duet::middleware::{BoxCallFuture, CallInfo, CallService};
use duet::{Code, Peer, Request, RequestExt, Response, Status, Transport};
use duet_tests::harness::{self, Running, VIAS, Via};
use duet_tests::pb::matrix::v1::{CountRequest, EchoRequest, KindsClient, KindsServer};
use duet_tests::services::{KindsImpl, Tag};
use futures_util::StreamExt;
use tower::{Service, ServiceExt};

const TOKEN: &str = "open-sesame";

/// What the server interceptor saw of one call.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    transport: Option<Transport>,
    peer: Peer,
    timeout: Option<Duration>,
}

/// What a test layer does with each call: makes its future from the service below and the head.
trait OnCall: Fn(&mut CallService, Request<()>) -> BoxCallFuture + Clone + Send + Sync + 'static {}

impl<F: Fn(&mut CallService, Request<()>) -> BoxCallFuture + Clone + Send + Sync + 'static> OnCall for F {}

/// A test layer, running its [`OnCall`] for every call that passes it.
#[derive(Clone)]
struct Around<F>(F);

fn around<F: OnCall>(on_call: F) -> Around<F> {
    Around(on_call)
}

impl<F: OnCall> tower::Layer<CallService> for Around<F> {
    type Service = Wrapped<F>;

    fn layer(&self, inner: CallService) -> Wrapped<F> {
        Wrapped { inner, on_call: self.0.clone() }
    }
}

/// The service an [`Around`] layer makes.
#[derive(Clone)]
struct Wrapped<F> {
    inner: CallService,
    on_call: F,
}

impl<F: OnCall> tower::Service<Request<()>> for Wrapped<F> {
    type Response = Response<()>;
    type Error = Status;
    type Future = BoxCallFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Status>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<()>) -> BoxCallFuture {
        (self.on_call)(&mut self.inner, req)
    }
}

/// Adds `x-layer: seen` to every response head.
fn stamp() -> Around<impl OnCall> {
    around(|inner: &mut CallService, req: Request<()>| -> BoxCallFuture {
        let call = inner.call(req);
        Box::pin(async move {
            let mut resp = call.await?;
            resp.metadata_mut().insert("x-layer", "seen".parse().unwrap());
            Ok(resp)
        })
    })
}

struct Fixture {
    running: Running,
    seen: Arc<Mutex<Vec<Seen>>>,
}

async fn start() -> Fixture {
    let seen = Arc::new(Mutex::new(vec![]));
    let log = seen.clone();
    let server = duet::Server::builder()
        .interceptor(move |mut req: Request<()>| {
            let info = req.extensions().get::<CallInfo>().cloned().expect("every call has its CallInfo");
            log.lock().unwrap().push(Seen {
                path: info.path.into_owned(),
                transport: info.transport,
                peer: req.peer(),
                timeout: CallInfo::timeout(&req),
            });
            match req.metadata().get("x-token") {
                Some(t) if t == TOKEN => {
                    req.extensions_mut().insert(Tag("from-interceptor".into()));
                    Ok(req)
                }
                _ => Err(Status::unauthenticated("no token")),
            }
        })
        .layer(stamp())
        .add_service(KindsServer::new(KindsImpl::default()));
    Fixture { running: harness::serve(server).await, seen }
}

fn with_token<T>(msg: T) -> Request<T> {
    let mut req = Request::new(msg);
    req.metadata_mut().insert("x-token", TOKEN.parse().unwrap());
    req
}

fn echo(text: &str) -> EchoRequest {
    EchoRequest { text: text.into(), ..Default::default() }
}

#[tokio::test]
async fn a_server_interceptor_refuses_a_call_without_its_token_on_every_transport() {
    let f = start().await;
    for via in VIAS {
        let client = KindsClient::new(f.running.via(via));
        let refused = client.echo(echo("hi")).await.expect_err("no token");
        assert_eq!(refused.code(), Code::Unauthenticated, "{via}: {refused:?}");
        assert_eq!(refused.message(), "no token", "{via}");
        let admitted = client.echo(with_token(echo("hi"))).await.unwrap_or_else(|s| panic!("{via}: {s:?}"));
        assert_eq!(admitted.get_ref().text, "hi", "{via}");
        assert_eq!(admitted.extensions().get::<Transport>(), Some(&via.transport()), "{via}");
    }
    f.running.stop().await;
}

#[tokio::test]
async fn a_server_layer_adds_response_metadata_that_reaches_the_client_on_every_transport() {
    let f = start().await;
    for via in VIAS {
        let client = KindsClient::new(f.running.via(via));
        let unary = client.echo(with_token(echo("hi"))).await.unwrap();
        assert_eq!(unary.metadata().get("x-layer").map(|v| v.to_str().unwrap()), Some("seen"), "{via} unary");
        let stream = client.count(with_token(CountRequest { count: 3 })).await.unwrap();
        assert_eq!(stream.metadata().get("x-layer").map(|v| v.to_str().unwrap()), Some("seen"), "{via} stream");
        let items: Vec<_> = stream.into_inner().collect().await;
        assert_eq!(items.len(), 3, "{via}: the body passes the layer untouched");
    }
    f.running.stop().await;
}

#[tokio::test]
async fn extensions_an_interceptor_adds_reach_the_handler_on_every_transport() {
    let f = start().await;
    for via in VIAS {
        let client = KindsClient::new(f.running.via(via));
        let reply = client.echo(with_token(echo("tag"))).await.unwrap();
        assert_eq!(reply.get_ref().text, r#"Some(Tag("from-interceptor"))"#, "{via}");
    }
    f.running.stop().await;
}

#[tokio::test]
async fn the_interceptor_sees_path_transport_peer_and_deadline_alike_on_both_transports() {
    let f = start().await;
    let client_id = f.running.connector.endpoint().id();
    for via in VIAS {
        f.seen.lock().unwrap().clear();
        let client = KindsClient::new(f.running.via(via));
        let mut req = with_token(echo("hi"));
        req.set_timeout(Duration::from_secs(7));
        client.echo(req).await.unwrap();
        let seen = f.seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 1, "{via}: one call, one interception: {seen:?}");
        let seen = &seen[0];
        assert_eq!(seen.path, "/matrix.v1.Kinds/Echo", "{via}");
        assert_eq!(seen.transport, Some(via.transport()), "{via}");
        match via.transport() {
            Transport::Grpc => assert!(matches!(seen.peer, Peer::Grpc(Some(a)) if a.ip().is_loopback()), "{seen:?}"),
            Transport::Iroh => assert_eq!(seen.peer, Peer::Iroh(client_id), "{via}"),
        }
        let timeout = seen.timeout.expect("the deadline travels");
        assert!(timeout <= Duration::from_secs(7) && timeout > Duration::from_secs(6), "{via}: {timeout:?}");
    }
    f.running.stop().await;
}

#[tokio::test]
async fn client_middleware_runs_once_per_call_on_every_transport_and_once_across_a_dual_fallback() {
    let mut f = start().await;
    let intercepted = Arc::new(AtomicUsize::new(0));
    let answered = Arc::new(Mutex::new(vec![]));
    let channel = |via: Via| {
        let n = intercepted.clone();
        let log = answered.clone();
        f.running
            .via(via)
            .interceptor(move |mut req: Request<()>| {
                n.fetch_add(1, Ordering::SeqCst);
                req.metadata_mut().insert("x-token", TOKEN.parse().unwrap());
                req.extensions_mut().insert(Tag("client".into()));
                Ok(req)
            })
            // Counts the calls it sees and the transport that answered each.
            .layer(around(move |inner: &mut CallService, req: Request<()>| {
                assert_eq!(req.extensions().get::<Tag>(), Some(&Tag("client".into())), "the interceptor ran first");
                let (call, log) = (inner.call(req), log.clone());
                Box::pin(async move {
                    let resp = call.await;
                    let transport = resp.as_ref().ok().and_then(|r| r.extensions().get::<Transport>().copied());
                    log.lock().unwrap().push(transport);
                    resp
                })
            }))
    };
    for via in VIAS {
        intercepted.store(0, Ordering::SeqCst);
        answered.lock().unwrap().clear();
        let client = KindsClient::new(channel(via));
        // The server's interceptor admits the call only with the token the client's added.
        client.echo(echo("a")).await.unwrap_or_else(|s| panic!("{via}: {s:?}"));
        let stream = client.count(CountRequest { count: 2 }).await.unwrap();
        assert_eq!(stream.into_inner().collect::<Vec<_>>().await.len(), 2);
        assert_eq!(intercepted.load(Ordering::SeqCst), 2, "{via}");
        assert_eq!(*answered.lock().unwrap(), vec![Some(via.transport()); 2], "{via}");
    }

    // Iroh goes away: a Dual call falls back to gRPC, and its middleware still runs once.
    let dual = KindsClient::new(channel(Via::Dual)).with_default_timeout(Duration::from_secs(5));
    f.running.server.stop_iroh().await;
    intercepted.store(0, Ordering::SeqCst);
    answered.lock().unwrap().clear();
    for _ in 0..3 {
        let reply = dual.clone().echo(echo("b")).await.expect("falls back to gRPC");
        assert_eq!(reply.extensions().get::<Transport>(), Some(&Transport::Grpc));
    }
    assert_eq!(intercepted.load(Ordering::SeqCst), 3, "once per call, not per attempt");
    assert_eq!(*answered.lock().unwrap(), vec![Some(Transport::Grpc); 3]);
    f.running.stop().await;
}

#[tokio::test]
async fn a_client_interceptor_refusing_sends_nothing() {
    let f = start().await;
    for via in VIAS {
        f.seen.lock().unwrap().clear();
        let channel = f.running.via(via).interceptor(|_| Err(Status::permission_denied("client says no")));
        let refused = KindsClient::new(channel).echo(with_token(echo("x"))).await.expect_err("refused");
        assert_eq!(refused.code(), Code::PermissionDenied, "{via}");
        assert!(f.seen.lock().unwrap().is_empty(), "{via}: the server saw nothing");
    }
    f.running.stop().await;
}

use crate::metrics;

/// The value of the first sample line starting with `prefix`.
fn sample(text: &str, prefix: &str) -> Option<f64> {
    text.lines().find(|l| l.starts_with(prefix))?.rsplit(' ').next()?.parse().ok()
}

#[tokio::test]
async fn a_server_records_the_calls_it_serves_as_histograms_by_transport_and_code() {
    let metrics = metrics();
    let f = start().await;
    for via in [Via::Grpc, Via::Iroh] {
        let client = KindsClient::new(f.running.via(via));
        for _ in 0..3 {
            client.echo(with_token(echo("m"))).await.unwrap();
        }
        client.echo(echo("no token")).await.unwrap_err();
    }
    let text = metrics.render();
    for transport in ["grpc", "iroh"] {
        let ok = format!(
            r#"duet_server_rpc_duration_seconds_count{{service="kinds",method="Echo",transport="{transport}",code="Ok"}}"#
        );
        assert!(sample(&text, &ok).unwrap_or(0.0) >= 3.0, "{transport}: {ok} in\n{text}");
        let refused = format!(
            r#"duet_server_rpc_duration_seconds_count{{service="kinds",method="Echo",transport="{transport}",code="Unauthenticated"}}"#
        );
        assert!(sample(&text, &refused).unwrap_or(0.0) >= 1.0, "{transport}: {refused}");
        let bucket = format!(
            r#"duet_server_rpc_duration_seconds_bucket{{service="kinds",method="Echo",transport="{transport}",code="Ok",le="+Inf"}}"#
        );
        assert!(sample(&text, &bucket).is_some(), "a real histogram, with buckets: {bucket}");
    }
    // Other tests of this process call the same service: wait for the gauge to settle at zero.
    for transport in ["grpc", "iroh"] {
        let in_flight = format!(r#"duet_server_calls_in_flight{{service="kinds",transport="{transport}"}}"#);
        let mut value = None;
        for _ in 0..100 {
            value = sample(&metrics.render(), &in_flight);
            if value == Some(0.0) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(value, Some(0.0), "{transport}: every call ended");
    }
    let client_side =
        r#"duet_rpc_duration_seconds_bucket{service="kinds",method="Echo",transport="iroh",code="Ok",le="+Inf"}"#;
    assert!(sample(&text, client_side).is_some(), "the client's durations are a histogram too");
    f.running.stop().await;
}

#[tokio::test]
async fn a_call_past_its_deadline_is_recorded_as_deadline_exceeded_on_both_transports() {
    let metrics = metrics();
    let kinds = KindsImpl::default();
    kinds.set_delay(Transport::Grpc, 3_000);
    kinds.set_delay(Transport::Iroh, 3_000);
    let running = harness::serve(duet::Server::builder().add_service(KindsServer::new(kinds))).await;
    for via in [Via::Grpc, Via::Iroh] {
        let key = format!(
            r#"duet_server_rpc_duration_seconds_count{{service="kinds",method="Echo",transport="{}",code="DeadlineExceeded"}}"#,
            via.transport()
        );
        let before = sample(&metrics.render(), &key).unwrap_or(0.0);
        let mut req = Request::new(echo("slow"));
        req.set_timeout(Duration::from_millis(500));
        let err = KindsClient::new(running.via(via)).echo(req).await.expect_err("past its deadline");
        assert_eq!(err.code(), Code::DeadlineExceeded, "{via}");
        let mut after = before;
        for _ in 0..100 {
            after = sample(&metrics.render(), &key).unwrap_or(0.0);
            if after > before {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(after > before, "{via}: the server recorded the call as DeadlineExceeded ({before} -> {after})");
    }
    running.stop().await;
}

#[tokio::test]
async fn traceparent_joins_the_client_span_and_the_server_span_in_one_trace() {
    let ids = crate::logs::trace_ids();
    let f = start().await;
    for via in VIAS {
        let client = KindsClient::new(f.running.via(via));
        let reply = client.echo(with_token(echo("trace"))).await.unwrap();
        let text = &reply.get_ref().text;
        let trace = text
            .strip_prefix("Some(\"")
            .and_then(|t| t.strip_suffix("\")"))
            .unwrap_or_else(|| panic!("{via}: the handler has no trace context: {text}"));
        assert_eq!(trace.len(), 32, "{via}: {trace}");
        let ids = ids.0.lock().unwrap();
        let on = |span: &str| ids.get(span).is_some_and(|v| v.iter().any(|t| t == trace));
        assert!(on("duet.call"), "{via}: the client span carries trace {trace}: {ids:?}");
        assert!(on("duet.serve"), "{via}: the server span carries trace {trace}: {ids:?}");
    }

    // A traceparent the caller set itself (an OpenTelemetry propagator's, say) is sent as it is.
    let client = KindsClient::new(f.running.via(Via::Iroh));
    let mut req = with_token(echo("trace"));
    req.metadata_mut()
        .insert("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".parse().unwrap());
    let reply = client.echo(req).await.unwrap();
    assert_eq!(reply.get_ref().text, r#"Some("4bf92f3577b34da6a3ce929d0e0e4736")"#);
    f.running.stop().await;
}

/// What [`odd`] does with the rest of a call.
#[derive(Clone, Copy, Debug)]
enum Way {
    /// Answers without running the call.
    Invents,
    /// Drops the request's extensions (the call's way to the stack's end with them) on the way down.
    Loses,
    /// Runs the rest of the call a second time once it answered, as a naive retry would.
    RunsTwice,
    /// Gives up on the rest of the call at once and answers by itself a moment later.
    Abandons,
    /// Runs the rest of the call on a task of its own (as tower's `Buffer` does): no misbehaviour.
    Elsewhere,
}

/// A layer that does something odd with the rest of the call, the `way` it is told.
fn odd(way: Way) -> Around<impl OnCall> {
    around(move |inner: &mut CallService, mut req: Request<()>| -> BoxCallFuture {
        match way {
            Way::Invents => Box::pin(async { Ok(Response::new(())) }),
            Way::Loses => {
                *req.extensions_mut() = Default::default();
                inner.call(req)
            }
            Way::RunsTwice => {
                let again = Request::from_parts(req.metadata().clone(), req.extensions().clone(), ());
                let (first, inner) = (inner.call(req), inner.clone());
                Box::pin(async move {
                    first.await?;
                    inner.oneshot(again).await
                })
            }
            Way::Abandons => {
                drop(inner.call(req));
                Box::pin(async {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    Ok(Response::new(()))
                })
            }
            Way::Elsewhere => {
                let task = tokio::spawn(inner.clone().oneshot(req));
                Box::pin(async move { task.await.expect("the layer's task") })
            }
        }
    })
}

#[tokio::test]
async fn a_layer_that_invents_a_response_loses_abandons_or_reruns_the_call_gets_internal_on_every_transport() {
    let ways = [
        (Way::Invents, "without running it"),
        (Way::Loses, "lost the call it was to run"),
        (Way::RunsTwice, "ran the rest of a call twice"),
        (Way::Abandons, "before the call below it did"),
    ];
    for (way, says) in ways {
        let server = duet::Server::builder().layer(odd(way)).add_service(KindsServer::new(KindsImpl::default()));
        let running = harness::serve(server).await;
        for via in VIAS {
            let client = KindsClient::new(running.via(via));
            let status = within(client.echo(echo("hi"))).await.expect_err("the layer broke the call");
            assert_eq!(status.code(), Code::Internal, "{way:?} {via}: {status:?}");
            assert!(status.message().contains(says), "{way:?} {via}: {status:?}");
            // The connection survives: the next call fails the same way, not as a transport error.
            let again = within(client.echo(echo("hi"))).await.expect_err("the layer broke the call");
            assert_eq!(again.code(), Code::Internal, "{way:?} {via}: {again:?}");
        }
        running.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_layer_may_run_the_rest_of_a_call_on_another_task_on_both_sides_of_every_transport() {
    let server = duet::Server::builder().layer(odd(Way::Elsewhere)).add_service(KindsServer::new(KindsImpl::default()));
    let running = harness::serve(server).await;
    for via in VIAS {
        let channel = running.via(via).layer(odd(Way::Elsewhere));
        let client = KindsClient::new(channel);
        for _ in 0..20 {
            // A lost wake-up would hang the call: the timeout makes it a failure.
            let reply = within(client.echo(echo("far"))).await.unwrap_or_else(|s| panic!("{via}: {s:?}"));
            assert_eq!(reply.get_ref().text, "far", "{via}");
        }
        let stream = within(client.count(CountRequest { count: 3 })).await.unwrap_or_else(|s| panic!("{via}: {s:?}"));
        assert_eq!(stream.into_inner().collect::<Vec<_>>().await.len(), 3, "{via}");
    }
    running.stop().await;
}

/// `call`, failed if it takes longer than any call here should.
async fn within<T>(call: impl Future<Output = Result<T, Status>>) -> Result<T, Status> {
    tokio::time::timeout(Duration::from_secs(10), call).await.expect("the call hung")
}

/// The stack's end, sent off to be polled by a future beside the call in the same task.
type Sent = (BoxCallFuture, tokio::sync::oneshot::Sender<Result<Response<()>, Status>>);

#[tokio::test]
async fn the_end_of_a_client_stack_may_be_polled_beside_the_call_in_its_own_task() {
    let running = harness::serve(duet::Server::builder().add_service(KindsServer::new(KindsImpl::default()))).await;
    for via in VIAS {
        let (sender, mut ends) = tokio::sync::mpsc::unbounded_channel::<Sent>();
        // Hands the rest of each call to whatever polls `ends`.
        let beside = around(move |inner: &mut CallService, req: Request<()>| -> BoxCallFuture {
            let (answer, answered) = tokio::sync::oneshot::channel();
            let _ = sender.send((inner.call(req), answer));
            Box::pin(async move { answered.await.map_err(|_| Status::internal("the end was dropped"))? })
        });
        let channel = running.via(via).layer(beside);
        let client = KindsClient::new(channel);
        for i in 0..20 {
            // The call and the future that polls its stack's end share one task (one waker).
            let text = format!("beside {i}");
            let beside = async {
                let (end, answer) = ends.recv().await.expect("the layer sent the end");
                let _ = answer.send(end.await);
            };
            let (reply, ()) = tokio::join!(within(client.echo(echo(&text))), beside);
            assert_eq!(reply.unwrap_or_else(|s| panic!("{via}: {s:?}")).get_ref().text, text, "{via}");
        }
    }
    running.stop().await;
}

/// Records `name` when a call passes on the way in, and again (with `'`) on the way out.
fn mark(name: &'static str, log: Log) -> Around<impl OnCall> {
    around(move |inner: &mut CallService, req: Request<()>| -> BoxCallFuture {
        log.lock().unwrap().push(name.into());
        let (call, log) = (inner.call(req), log.clone());
        Box::pin(async move {
            let resp = call.await;
            log.lock().unwrap().push(format!("{name}'"));
            resp
        })
    })
}

/// An interceptor that records `name` and refuses calls that carry `x-refuse: name`.
fn marking(name: &'static str, log: Log) -> impl Fn(Request<()>) -> Result<Request<()>, Status> {
    move |req| {
        log.lock().unwrap().push(name.into());
        match req.metadata().get("x-refuse") {
            Some(v) if v == name => Err(Status::permission_denied(name)),
            _ => Ok(req),
        }
    }
}

type Log = Arc<Mutex<Vec<String>>>;

/// One echo call, refused by the middleware named `refuse` if any: its outcome and the marks it left.
async fn marked_call(client: &KindsClient, log: &Log, refuse: Option<&str>) -> (Result<(), Status>, Vec<String>) {
    let mut req = Request::new(echo("order"));
    if let Some(name) = refuse {
        req.metadata_mut().insert("x-refuse", name.parse().unwrap());
    }
    log.lock().unwrap().clear();
    let answer = client.echo(req).await.map(|_| ());
    (answer, std::mem::take(&mut *log.lock().unwrap()))
}

#[tokio::test]
async fn interceptors_and_layers_run_in_the_order_added_on_both_sides_of_every_transport() {
    let log = Log::default();
    let async_log = log.clone();
    let server = duet::Server::builder()
        .interceptor(marking("s1", log.clone()))
        .layer(mark("s2", log.clone()))
        .async_interceptor(move |req: Request<()>| {
            async_log.lock().unwrap().push("s3".into());
            std::future::ready(Ok(req))
        })
        .interceptor(marking("s4", log.clone()))
        .add_service(KindsServer::new(KindsImpl::default()));
    let running = harness::serve(server).await;
    for via in VIAS {
        let channel = running
            .via(via)
            .interceptor(marking("c1", log.clone()))
            .layer(mark("c2", log.clone()))
            .interceptor(marking("c3", log.clone()));
        let client = KindsClient::new(channel);
        let (answer, order) = marked_call(&client, &log, None).await;
        answer.unwrap_or_else(|s| panic!("{via}: {s:?}"));
        assert_eq!(order, ["c1", "c2", "c3", "s1", "s2", "s3", "s4", "s2'", "c2'"], "{via}");
        // A refusal ends the call where it is made: the layers outside it see the error pass, the
        // ones inside never see the call.
        let (answer, order) = marked_call(&client, &log, Some("s4")).await;
        assert_eq!(answer.expect_err("refused").message(), "s4", "{via}");
        assert_eq!(order, ["c1", "c2", "c3", "s1", "s2", "s3", "s4", "s2'", "c2'"], "{via}");
        let (answer, order) = marked_call(&client, &log, Some("s1")).await;
        assert_eq!(answer.expect_err("refused").message(), "s1", "{via}");
        assert_eq!(order, ["c1", "c2", "c3", "s1", "c2'"], "{via}");
        let (answer, order) = marked_call(&client, &log, Some("c1")).await;
        assert_eq!(answer.expect_err("refused").message(), "c1", "{via}");
        assert_eq!(order, ["c1"], "{via}");
    }
    running.stop().await;
}
