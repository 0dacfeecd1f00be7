use duet::{Request, Response, Status, Streaming};
use duet_tests::pb::matrix::v1::{CountRequest, EchoReply, EchoRequest, Kinds};
use futures_util::Stream;

struct S;

#[duet::service]
impl Kinds for S {
    async fn echo(&self, r: Request<EchoRequest>) -> Result<Response<EchoReply>, Status> {
        Ok(Response::new(EchoReply { text: r.into_inner().text, index: 0 }))
    }

    async fn count(&self, _: Request<CountRequest>) -> Result<Response<impl Stream + Send + 'static>, Status> {
        Ok(Response::new(futures_util::stream::empty::<Result<EchoReply, Status>>()))
    }
}

fn main() {}
