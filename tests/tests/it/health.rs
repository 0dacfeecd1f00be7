//! `duet-health`: the standard health service on both transports, driven by one reporter.

use std::time::Duration;

use duet::Code;
use duet_health::pb::health_check_response::ServingStatus;
use duet_health::pb::{HealthCheckRequest, HealthClient};
use duet_tests::harness::{self, VIAS};
use futures_util::StreamExt;

fn request(service: &str) -> HealthCheckRequest {
    HealthCheckRequest { service: service.into() }
}

#[tokio::test]
async fn check_and_watch_answer_what_the_reporter_sets_on_every_transport() {
    let (reporter, health) = duet_health::health_reporter();
    let running = harness::serve(duet::Server::builder().add_service(health)).await;
    for via in VIAS {
        let client = HealthClient::new(running.via(via)).with_default_timeout(Duration::from_secs(5));
        let server = client.check(request("")).await.unwrap_or_else(|s| panic!("{via}: {s:?}"));
        assert_eq!(server.get_ref().status, ServingStatus::Serving as i32, "{via}: the server starts SERVING");
        let unknown = client.check(request("no.such.Service")).await.expect_err("never reported");
        assert_eq!(unknown.code(), Code::NotFound, "{via}");

        let service = format!("svc.{via}");
        let mut watch = client.watch(request(&service)).await.unwrap().into_inner();
        let first = watch.next().await.unwrap().unwrap();
        assert_eq!(first.status, ServingStatus::ServiceUnknown as i32, "{via}: not reported yet");
        reporter.set_not_serving(service.clone());
        assert_eq!(watch.next().await.unwrap().unwrap().status, ServingStatus::NotServing as i32, "{via}");
        assert_eq!(client.check(request(&service)).await.unwrap().get_ref().status, ServingStatus::NotServing as i32);
        reporter.set_serving(service.clone());
        assert_eq!(watch.next().await.unwrap().unwrap().status, ServingStatus::Serving as i32, "{via}");
        reporter.clear_service_status(&service);
        assert_eq!(watch.next().await.unwrap().unwrap().status, ServingStatus::ServiceUnknown as i32, "{via}");
        assert_eq!(client.check(request(&service)).await.unwrap_err().code(), Code::NotFound, "{via}");
    }
    running.stop().await;
}
