//! Every proto shape duet must carry, on both transports, and property tests of both codecs.

use std::collections::HashMap;

use bytes::Bytes;
use duet::Server;
use duet::well_known::{Duration, Timestamp};
use duet_tests::harness::{self, TRANSPORTS};
use duet_tests::pb::cases::a::v1::everything::{Choice, Inner, Mood};
use duet_tests::pb::cases::a::v1::{Color, Everything, Tree};
use duet_tests::pb::cases::b::v1::{ClockClient, ClockServer, MirrorClient, MirrorServer};
use duet_tests::services::{ClockImpl, FIXED_NOW, MirrorImpl};
use futures_util::StreamExt;
use proptest::prelude::*;
use prost::Message as _;

fn tree(depth: u32) -> Tree {
    Tree {
        value: format!("depth {depth}"),
        children: if depth == 0 { vec![] } else { vec![tree(depth - 1), tree(depth - 1)] },
    }
}

fn sample() -> Everything {
    Everything {
        inner: Some(Inner { label: "inner".into(), values: vec![-1, 0, i64::MAX] }),
        mood: Mood::Busy as i32,
        color: Color::Green as i32,
        choice: Some(Choice::NestedChoice(Inner { label: "in a oneof".into(), values: vec![7] })),
        by_key: HashMap::from([
            ("a".to_string(), Inner { label: "A".into(), values: vec![] }),
            ("ü".to_string(), Inner { label: "U".into(), values: vec![1, 2] }),
        ]),
        list: vec![Inner::default(), Inner { label: "second".into(), values: vec![3] }],
        blob: Bytes::from((0..=255u8).collect::<Vec<_>>()),
        maybe: Some(0),
        at: Some(Timestamp { seconds: 1_234_567_890, nanos: 42 }),
        took: Some(Duration { seconds: 3, nanos: 500_000_000 }),
        tree: Some(tree(3)),
        r#type: "a field named type".into(),
        tags: vec!["x".into(), String::new()],
        ratio: -0.25,
        flag: true,
        delta: -99,
        stamp: u64::MAX,
        maybe_blob: Some(Bytes::from_static(b"maybe")),
        blobs: vec![Bytes::new(), Bytes::from_static(b"two")],
    }
}

#[tokio::test]
async fn every_shape_round_trips_on_both_transports() {
    let running = harness::serve(
        Server::builder().add_service(MirrorServer::new(MirrorImpl)).add_service(ClockServer::new(ClockImpl)),
    )
    .await;
    for transport in TRANSPORTS {
        let mirror = MirrorClient::new(running.channel(transport));
        let sent = sample();
        assert_eq!(mirror.reflect(sent.clone()).await.unwrap().into_inner(), sent, "{transport}");

        // Unset optional fields and the other oneof arms survive too.
        for choice in [None, Some(Choice::Name("n".into())), Some(Choice::Number(0)), Some(Choice::Raw(Bytes::new()))] {
            let sent = Everything { choice, maybe: None, ..Default::default() };
            assert_eq!(mirror.reflect(sent.clone()).await.unwrap().into_inner(), sent, "{transport}");
        }

        // A recursive message streamed back child by child.
        let grown: Vec<Tree> = mirror.grow(tree(2)).await.unwrap().into_inner().map(|t| t.unwrap()).collect().await;
        assert_eq!(grown, tree(2).children, "{transport}");

        // Well-known types: Empty as (), Timestamp.
        let clock = ClockClient::new(running.channel(transport));
        assert_eq!(clock.now(()).await.unwrap().into_inner(), FIXED_NOW, "{transport}");
        clock.ping(()).await.unwrap();
    }
    running.stop().await;
}

#[test]
fn protobuf_codec_services_carry_the_runtimes_protobuf_fingerprint() {
    // Clock is built with iroh_codec(Protobuf) (tests/build.rs); codegen and runtime must agree.
    use duet_tests::pb::cases::b::v1::clock_methods;
    assert_eq!(clock_methods::NOW.codec, duet::WireCodec::Protobuf);
    assert_eq!(clock_methods::NOW.fingerprint, duet::__codegen::PROTOBUF_FINGERPRINT);
    assert_ne!(
        duet_tests::pb::cases::b::v1::mirror_methods::REFLECT.fingerprint,
        duet::__codegen::PROTOBUF_FINGERPRINT
    );
}

fn inner() -> impl Strategy<Value = Inner> {
    (".{0,8}", proptest::collection::vec(any::<i64>(), 0..4)).prop_map(|(label, values)| Inner { label, values })
}

fn arb_tree() -> impl Strategy<Value = Tree> {
    let leaf = ".{0,4}".prop_map(|value| Tree { value, children: vec![] });
    leaf.prop_recursive(3, 12, 3, |t| {
        (".{0,4}", proptest::collection::vec(t, 0..3)).prop_map(|(value, children)| Tree { value, children })
    })
}

/// Small blobs, and some of at least `duet::bytes_field::SHARE_FROM` bytes, which postcard decodes as
/// slices of the input instead of copies.
fn blob() -> impl Strategy<Value = Bytes> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..64).prop_map(Bytes::from),
        (4090usize..4200, any::<u8>()).prop_map(|(len, b)| Bytes::from(vec![b; len])),
    ]
}

fn everything() -> impl Strategy<Value = Everything> {
    let choice = prop_oneof![
        Just(None),
        ".{0,8}".prop_map(|s| Some(Choice::Name(s))),
        any::<u64>().prop_map(|n| Some(Choice::Number(n))),
        inner().prop_map(|i| Some(Choice::NestedChoice(i))),
        blob().prop_map(|b| Some(Choice::Raw(b))),
    ];
    (
        (proptest::option::of(inner()), any::<i32>(), any::<i32>(), choice),
        (
            proptest::collection::hash_map(".{0,6}", inner(), 0..4),
            proptest::collection::vec(inner(), 0..3),
            blob(),
            proptest::option::of(any::<i32>()),
            proptest::option::of(blob()),
            proptest::collection::vec(blob(), 0..3),
        ),
        (
            proptest::option::of(
                (any::<i64>(), 0..1_000_000_000i32).prop_map(|(seconds, nanos)| Timestamp { seconds, nanos }),
            ),
            proptest::option::of(arb_tree()),
            ".{0,8}",
            any::<f64>().prop_filter("NaN never equals itself", |f| !f.is_nan()),
            (any::<bool>(), any::<i32>(), any::<u64>()),
        ),
    )
        .prop_map(
            |(
                (inner, mood, color, choice),
                (by_key, list, blob, maybe, maybe_blob, blobs),
                (at, tree, ty, ratio, (flag, delta, stamp)),
            )| {
                Everything {
                    inner,
                    mood,
                    color,
                    choice,
                    by_key,
                    list,
                    blob,
                    maybe,
                    at,
                    took: None,
                    tree,
                    r#type: ty,
                    tags: vec![],
                    ratio,
                    flag,
                    delta,
                    stamp,
                    maybe_blob,
                    blobs,
                }
            },
        )
}

#[tokio::test]
async fn large_bytes_fields_of_every_shape_share_the_received_buffer() {
    let big = || Bytes::from(vec![9u8; duet::bytes_field::SHARE_FROM]);
    let small = Bytes::from_static(b"small");
    let msg = Everything {
        blob: big(),
        choice: Some(Choice::Raw(big())),
        maybe_blob: Some(big()),
        blobs: vec![big(), small.clone()],
        ..Default::default()
    };
    for codec in [duet::WireCodec::Postcard, duet::WireCodec::Protobuf] {
        let body = codec.encode(&msg, usize::MAX).unwrap();
        let got = codec.decode_shared::<Everything>(&body).unwrap();
        assert_eq!(got, msg, "{codec:?}");
        let shared = |b: &Bytes| body.as_ptr_range().contains(&b.as_ptr());
        let Some(Choice::Raw(raw)) = &got.choice else { panic!("{codec:?}: {:?}", got.choice) };
        let large = [
            ("blob", &got.blob),
            ("raw", raw),
            ("maybe_blob", got.maybe_blob.as_ref().unwrap()),
            ("blobs[0]", &got.blobs[0]),
        ];
        // postcard shares the large ones; protobuf (whose decoder would share any size) copies all.
        for (field, b) in large {
            assert_eq!(shared(b), codec == duet::WireCodec::Postcard, "{codec:?}: {field}");
        }
        assert!(!shared(&got.blobs[1]), "{codec:?}: a small field is copied");
    }

    // And on the wire, where the sender hands such fields to the stream as chunks of their own.
    let running = harness::serve(Server::builder().add_service(MirrorServer::new(MirrorImpl))).await;
    for transport in TRANSPORTS {
        let mirror = MirrorClient::new(running.channel(transport));
        assert_eq!(mirror.reflect(msg.clone()).await.unwrap().into_inner(), msg, "{transport}");
    }
    running.stop().await;
}

proptest! {
    #[test]
    fn every_message_survives_postcard_and_protobuf(msg in everything()) {
        let postcard = postcard::to_stdvec(&msg).unwrap();
        prop_assert_eq!(&postcard::from_bytes::<Everything>(&postcard).unwrap(), &msg);
        let protobuf = msg.encode_to_vec();
        prop_assert_eq!(&Everything::decode(&protobuf[..]).unwrap(), &msg);
        // And through duet's codec, both ways.
        for codec in [duet::WireCodec::Postcard, duet::WireCodec::Protobuf] {
            let bytes = codec.encode(&msg, usize::MAX).unwrap();
            prop_assert_eq!(&codec.decode::<Everything>(&bytes).unwrap(), &msg);
        }
    }

    #[test]
    fn recursive_trees_survive_both_codecs(t in arb_tree()) {
        prop_assert_eq!(&postcard::from_bytes::<Tree>(&postcard::to_stdvec(&t).unwrap()).unwrap(), &t);
        prop_assert_eq!(&Tree::decode(&t.encode_to_vec()[..]).unwrap(), &t);
    }
}
