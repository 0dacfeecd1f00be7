//! Every rpc of the torture proto, served by one impl and called through the generated client on
//! gRPC and on Iroh: each answer names the rpc that ran, so a call dispatched to the wrong handler
//! (a std trait method winning over an rpc of its name) fails.

use duet::iroh::Connector;
use duet::iroh::endpoint;
use duet::{Channel, Request, Response, Server, Status, Streaming, Transport};
use duet_torture::core::std::duet::prost::serde::tonic as crates;
use duet_torture::torture::r#type::r#async as pb;
use futures_util::StreamExt;
use pb::{ExtendClient, ExtendServer, Ping, Pong, TClient, TServer};

/// Each rpc of `Extend`: its name in the trait, on the client, and in the proto.
macro_rules! extend_rpcs {
    ($m:ident) => {
        $m! {
            clone clone Clone, into into_ Into, try_into try_into_ TryInto, as_ref as_ref AsRef,
            as_mut as_mut AsMut, to_owned to_owned ToOwned, to_string to_string ToString, drop drop Drop,
            eq eq Eq, cmp cmp Cmp, hash hash Hash, fmt fmt Fmt, default default Default, from from From,
            borrow borrow Borrow, deref deref Deref, next next Next, poll poll Poll, type_id type_id TypeId,
            clone_from clone_from CloneFrom, into_iter into_iter IntoIter, new new_ New,
            channel channel_ Channel, connect connect Connect,
            with_default_timeout with_default_timeout_ WithDefaultTimeout,
            max_decoding_message_size max_decoding_message_size_ MaxDecodingMessageSize,
            max_encoding_message_size max_encoding_message_size_ MaxEncodingMessageSize,
            send_compressed send_compressed_ SendCompressed, accept_compressed accept_compressed_ AcceptCompressed,
            from_arc from_arc FromArc, into_tonic into_tonic IntoTonic, name name Name, methods methods Methods,
            add_grpc add_grpc AddGrpc, iroh iroh Iroh, call call Call, poll_ready poll_ready PollReady,
            unimplemented unimplemented Unimplemented, unary unary Unary, inner inner Inner,
            request request Request, r#type r#type Type, r#match r#match Match, r#async r#async Async,
            r#await r#await Await, r#fn r#fn Fn, r#move r#move Move, r#return r#return Return,
            r#dyn r#dyn Dyn, r#impl r#impl Impl, r#loop r#loop Loop, r#where r#where Where,
            self_ self_ Self, super_ super_ Super, crate_ crate_ Crate, r#mod r#mod Mod, r#try r#try Try,
            r#gen r#gen Gen, r#yield r#yield Yield
        }
    };
}

struct Torture;

macro_rules! impl_extend {
    ($($handler:ident $client:ident $proto:ident),* $(,)?) => {
        impl pb::Extend for Torture {
            $(
                async fn $handler(&self, request: Request<Ping>) -> Result<Response<Pong>, Status> {
                    Ok(Response::new(Pong { which: stringify!($proto).into(), text: request.into_inner().text }))
                }
            )*
        }
    };
}
extend_rpcs!(impl_extend);

fn value<T: Default>(set: impl FnOnce(&mut T)) -> T {
    let mut v = T::default();
    set(&mut v);
    v
}

impl pb::T for Torture {
    async fn option(&self, request: Request<pb::Option>) -> Result<Response<pb::Result>, Status> {
        Ok(Response::new(pb::Result { value: request.into_inner().value }))
    }

    async fn r#box(&self, request: Request<pb::Box>) -> Result<Response<pb::String>, Status> {
        Ok(Response::new(pb::String { value: request.into_inner().value }))
    }

    async fn status(&self, request: Request<pb::Status>) -> Result<Response<pb::Response>, Status> {
        Ok(Response::new(pb::Response { value: request.into_inner().value }))
    }

    async fn streaming(&self, request: Request<Streaming<pb::Streaming>>) -> Result<Response<pb::Request>, Status> {
        let mut stream = request.into_inner();
        let mut joined = String::new();
        while let Some(m) = stream.message().await? {
            joined.push_str(&m.value);
        }
        Ok(Response::new(pb::Request { value: joined }))
    }

    async fn server_streaming(
        &self,
        request: Request<pb::Server>,
    ) -> Result<Response<duet::BoxStream<pb::Future>>, Status> {
        let value = request.into_inner().value;
        let items = (0..3).map(move |i| Ok(pb::Future { value: format!("{value}{i}") }));
        Ok(Response::new(Box::pin(futures_util::stream::iter(items))))
    }

    async fn bidi(&self, request: Request<Streaming<pb::B>>) -> Result<Response<duet::BoxStream<pb::Body>>, Status> {
        let replies = request.into_inner().map(|m| m.map(|b| pb::Body { value: b.value.to_uppercase() }));
        Ok(Response::new(Box::pin(replies)))
    }

    async fn keywords(&self, request: Request<pb::Keywords>) -> Result<Response<pb::Keywords>, Status> {
        Ok(Response::new(request.into_inner()))
    }

    async fn legacy(&self, request: Request<pb::Vec>) -> Result<Response<pb::Vec>, Status> {
        Ok(Response::new(request.into_inner()))
    }
}

impl pb::Empty for Torture {}

impl crates::Crates for Torture {
    async fn echo(&self, request: Request<crates::Alloc>) -> Result<Response<crates::Alloc>, Status> {
        Ok(Response::new(request.into_inner()))
    }

    async fn stream(
        &self,
        request: Request<Streaming<crates::Alloc>>,
    ) -> Result<Response<duet::BoxStream<crates::Alloc>>, Status> {
        Ok(Response::new(Box::pin(request.into_inner())))
    }
}

async fn channels() -> (duet::ServerHandle, Vec<(Transport, Channel)>) {
    let server = Server::builder()
        .grpc("127.0.0.1:0".parse().unwrap())
        .iroh(endpoint::bind_loopback().await.expect("server endpoint"))
        .add_service(ExtendServer::new(Torture))
        .add_service(TServer::new(Torture))
        .add_service(pb::EmptyServer::new(Torture))
        .add_service(crates::CratesServer::new(Torture))
        .serve()
        .await
        .expect("serves");
    let connector = Connector::new(endpoint::bind_loopback().await.expect("client endpoint"));
    let grpc = Channel::grpc_lazy(format!("http://{}", server.grpc_addr().unwrap())).unwrap();
    let iroh = Channel::iroh(&connector, server.iroh_addr().unwrap());
    (server, vec![(Transport::Grpc, grpc), (Transport::Iroh, iroh)])
}

macro_rules! call_extend {
    ($($handler:ident $client:ident $proto:ident),* $(,)?) => {
        async fn call_every_extend_rpc(client: &ExtendClient, transport: Transport) -> usize {
            let mut called = 0;
            $(
                let ping = Ping { text: format!("{}:{}", transport, stringify!($proto)) };
                let reply = client.$client(ping.clone()).await.unwrap_or_else(|s| panic!("{} on {transport}: {s}", stringify!($proto)));
                assert_eq!(reply.extensions().get::<Transport>(), Some(&transport));
                let reply = reply.into_inner();
                assert_eq!(reply.which, stringify!($proto), "{transport}: the call reached another handler");
                assert_eq!(reply.text, ping.text);
                called += 1;
            )*
            called
        }
    };
}
extend_rpcs!(call_extend);

#[tokio::test]
async fn every_rpc_is_served_and_called_on_both_transports() {
    let (_server, channels) = channels().await;
    for (transport, channel) in channels {
        // An owned client: `.clone(..)` and `.into_(..)` still reach the rpcs, not the std traits.
        let extend = ExtendClient::new(channel.clone());
        assert_eq!(call_every_extend_rpc(&extend, transport).await, 59, "{transport}");

        let t = TClient::new(channel.clone());
        let text = |s: &str| s.to_owned();
        assert_eq!(t.option(pb::Option { value: text("o") }).await.unwrap().into_inner().value, "o");
        assert_eq!(t.r#box(pb::Box { value: text("b") }).await.unwrap().into_inner().value, "b");
        assert_eq!(t.status(pb::Status { value: text("s") }).await.unwrap().into_inner().value, "s");
        let parts = ["a", "b", "c"].map(|v| pb::Streaming { value: text(v) });
        assert_eq!(t.streaming(futures_util::stream::iter(parts)).await.unwrap().into_inner().value, "abc");
        let streamed: Vec<String> = t
            .server_streaming(pb::Server { value: text("f") })
            .await
            .unwrap()
            .into_inner()
            .map(|m| m.unwrap().value)
            .collect()
            .await;
        assert_eq!(streamed, ["f0", "f1", "f2"], "{transport}");
        let echoed: Vec<String> = t
            .bidi(futures_util::stream::iter([pb::B { value: text("x") }, pb::B { value: text("y") }]))
            .await
            .unwrap()
            .into_inner()
            .map(|m| m.unwrap().value)
            .collect()
            .await;
        assert_eq!(echoed, ["X", "Y"], "{transport}");
        let keywords = value(|k: &mut pb::Keywords| {
            k.r#type = text("type");
            k.self_ = text("self");
            k.r#where = text("where");
            k.kind = pb::Match::Default as i32;
            k.oneofs = Some(pb::Oneofs { r#type: Some(pb::oneofs::Type::Fn(text("fn"))) });
        });
        assert_eq!(t.keywords(keywords.clone()).await.unwrap().into_inner(), keywords, "{transport}");
        let legacy = pb::Vec { r#loop: 7, level: Some(pb::Level::Low as i32), ..Default::default() };
        let back = t.legacy(legacy.clone()).await.unwrap().into_inner();
        assert_eq!(back, legacy, "{transport}");
        assert_eq!(back.r#ref(), "<default>", "proto2 defaults survive {transport}");
        assert_eq!(back.level(), pb::Level::Low);
    }
}

#[tokio::test]
async fn an_empty_service_answers_every_method_unimplemented() {
    let (_server, channels) = channels().await;
    assert!(duet::Service::methods(&pb::EmptyServer::new(Torture)).is_empty());
    static NOPE: duet::MethodDesc = duet::MethodDesc {
        path: "/torture.type.async.Empty/Nope",
        service: "torture.type.async.Empty",
        method: "Nope",
        config_name: "empty",
        kind: duet::MethodKind::Unary,
        idempotent: false,
        fingerprint: 0,
        codec: duet::WireCodec::Postcard,
    };
    for (transport, channel) in channels {
        let status = channel
            .unary::<Ping, Pong>(Request::new(Ping::default()), &NOPE, &duet::CallOptions::default())
            .await
            .expect_err("an empty service has no methods");
        assert_eq!(status.code(), duet::Code::Unimplemented, "{transport}: {status}");
    }
}

#[tokio::test]
async fn minus_zero_arrives_as_each_wire_encodes_it() {
    let (_server, channels) = channels().await;
    for (transport, channel) in channels {
        let t = TClient::new(channel);
        let sent = pb::Keywords { minus_zero: -0.0, ..Default::default() };
        let back = t.keywords(sent).await.unwrap().into_inner().minus_zero;
        assert_eq!(back, 0.0);
        // proto3 leaves out a field equal to its default, and -0.0 == 0.0, so protobuf sends nothing
        // and the receiver reads +0.0; postcard sends every field as it is (README, "Wire formats").
        match transport {
            Transport::Grpc => assert!(back.is_sign_positive(), "gRPC: {back}"),
            Transport::Iroh => assert!(back.is_sign_negative(), "Iroh: {back}"),
        }
    }
}

#[tokio::test]
async fn a_package_named_after_core_std_and_duet_shadows_nothing() {
    let (_server, channels) = channels().await;
    let leaf = crates::Alloc { data: duet::bytes::Bytes::from_static(b"leaf"), ..Default::default() };
    let tree = crates::Alloc {
        data: duet::bytes::Bytes::from(vec![7u8; 5000]),
        names: vec!["a".into(), "b".into()],
        children: [("child".to_owned(), leaf.clone())].into(),
        next: Some(Box::new(leaf)),
    };
    for (transport, channel) in channels {
        let client = crates::CratesClient::new(channel);
        assert_eq!(client.echo(tree.clone()).await.unwrap().into_inner(), tree, "{transport}");
        let back: Vec<crates::Alloc> = client
            .stream(futures_util::stream::iter([tree.clone(), crates::Alloc::default()]))
            .await
            .unwrap()
            .into_inner()
            .map(|m| m.unwrap())
            .collect()
            .await;
        assert_eq!(back, [tree.clone(), crates::Alloc::default()], "{transport}");
    }
}
