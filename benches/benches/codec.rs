//! The codec alone: encode + decode of a realistic message, postcard (duet's Iroh default) against
//! protobuf (gRPC, and duet's Iroh option), with the encoded sizes printed.

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use duet::WireCodec;
use duet_bench::pb::Blob;

fn realistic() -> duet_bench::pb::Size {
    duet_bench::pb::Size { total: 64 << 20, chunk: 65_536 }
}

fn bench(c: &mut Criterion) {
    let cases: [(&str, Blob); 2] = [
        ("blob 4 KiB", Blob { data: Bytes::from(vec![5u8; 4096]) }),
        ("blob 64 KiB", Blob { data: Bytes::from(vec![5u8; 65_536]) }),
    ];
    for (name, msg) in cases {
        for codec in [WireCodec::Postcard, WireCodec::Protobuf] {
            let size = codec.encode(&msg, usize::MAX).unwrap().len();
            c.bench_function(&format!("{name} {codec:?} encode+decode ({size} B)"), |b| {
                b.iter(|| {
                    let bytes = codec.encode(std::hint::black_box(&msg), usize::MAX).unwrap();
                    codec.decode::<Blob>(&bytes).unwrap()
                })
            });
        }
    }
    let small = realistic();
    for codec in [WireCodec::Postcard, WireCodec::Protobuf] {
        let size = codec.encode(&small, usize::MAX).unwrap().len();
        c.bench_function(&format!("small message {codec:?} encode+decode ({size} B)"), |b| {
            b.iter(|| {
                let bytes = codec.encode(std::hint::black_box(&small), usize::MAX).unwrap();
                codec.decode::<duet_bench::pb::Size>(&bytes).unwrap()
            })
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
