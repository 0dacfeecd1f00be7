use duet::{Request, Response, Status, Streaming};
use duet_tests::pb::matrix::v1::{CountRequest, EchoReply, EchoRequest, Kinds};

struct S;

#[duet::service(config_name = "kinds")]
impl Kinds for S {
    async fn echo(&self, r: Request<EchoRequest>) -> Result<Response<EchoReply>, Status> {
        Ok(Response::new(EchoReply { text: r.into_inner().text, index: 0 }))
    }

    async fn record(&self, r: Request<EchoRequest>) -> Result<Response<EchoReply>, Status> {
        Ok(Response::new(EchoReply { text: r.into_inner().text, index: 0 }))
    }

    async fn count(&self, _: Request<CountRequest>) -> Result<Response<Vec<EchoReply>>, Status> {
        Ok(Response::new(vec![]))
    }

    async fn join(&self, _: Request<Streaming<EchoRequest>>) -> Result<Response<EchoReply>, Status> {
        Err(Status::unimplemented(""))
    }

    async fn chat(&self, _: Request<Streaming<EchoRequest>>) -> Result<Response<Vec<EchoReply>>, Status> {
        Ok(Response::new(vec![]))
    }
}

fn main() {}
