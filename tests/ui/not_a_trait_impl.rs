use duet::{Request, Response, Status};
use duet_tests::pb::matrix::v1::{EchoReply, EchoRequest};

struct S;

#[duet::service]
impl S {
    async fn echo(&self, r: Request<EchoRequest>) -> Result<Response<EchoReply>, Status> {
        Ok(Response::new(EchoReply { text: r.into_inner().text, index: 0 }))
    }
}

fn main() {}
