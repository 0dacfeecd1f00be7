//! Bulk transfer over each transport: 64 MiB each way in 64 KiB messages.

use bytes::Bytes;
use duet::Server;
use duet_tests::harness::{self, TRANSPORTS};
use duet_tests::interop::TestServiceImpl;
use duet_tests::pb::grpc::testing::{
    Payload, ResponseParameters, StreamingInputCallRequest, StreamingOutputCallRequest, TestServiceClient,
    TestServiceServer,
};
use futures_util::StreamExt;

#[tokio::test]
async fn sixty_four_mib_each_way() {
    let running =
        harness::serve(Server::builder().add_service(TestServiceServer::new(TestServiceImpl::default()))).await;
    for t in TRANSPORTS {
        let client = TestServiceClient::new(running.channel(t)).max_decoding_message_size(8 << 20);
        // 64 callers of 1 MiB each way first, as a busy peer would.
        let calls = (0..64).map(|_| {
            let c = client.clone();
            async move {
                let req = duet_tests::pb::grpc::testing::SimpleRequest {
                    response_size: 1 << 20,
                    payload: Some(Payload { r#type: 0, body: Bytes::from(vec![0u8; 1 << 20]) }),
                    ..Default::default()
                };
                c.unary_call(req).await.map(|r| r.into_inner().payload.unwrap().body.len())
            }
        });
        for r in futures_util::future::join_all(calls).await {
            assert_eq!(r.unwrap_or_else(|e| panic!("{t} 1 MiB calls: {e:?}")), 1 << 20);
        }
        let req = StreamingOutputCallRequest {
            response_parameters: vec![ResponseParameters { size: 65_536, interval_us: 0 }; 1024],
            ..Default::default()
        };
        let mut total = 0usize;
        let mut stream = client.streaming_output_call(req).await.unwrap().into_inner();
        while let Some(r) = stream.next().await {
            total += r.unwrap_or_else(|e| panic!("{t} after {total} bytes: {e:?}")).payload.unwrap().body.len();
        }
        assert_eq!(total, 64 << 20, "{t} download");
        let chunk = Bytes::from(vec![1u8; 65_536]);
        let reqs = (0..1024)
            .map(move |_| StreamingInputCallRequest { payload: Some(Payload { r#type: 0, body: chunk.clone() }) });
        let resp = client.streaming_input_call(futures_util::stream::iter(reqs)).await;
        assert_eq!(
            resp.unwrap_or_else(|e| panic!("{t} upload: {e:?}")).into_inner().aggregated_payload_size,
            64 << 20,
            "{t} upload"
        );
    }
    running.stop().await;
}
