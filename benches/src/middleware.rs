//! The middleware the `duet-*-middleware` contenders carry: what a typical auth setup adds to a call.
//! The server checks a token with an interceptor and stamps each response with a layer; the client
//! adds the token with an interceptor.

use std::task::{Context, Poll};

use duet::middleware::{BoxCallFuture, CallService};
use duet::{Request, Response, Status};

const TOKEN: &str = "Bearer bench";

/// The server side: one interceptor and one layer.
pub fn serve(server: duet::Server) -> duet::Server {
    server
        .interceptor(|req: Request<()>| match req.metadata().get("authorization") {
            Some(t) if t == TOKEN => Ok(req),
            _ => Err(Status::unauthenticated("no token")),
        })
        .layer(tower::layer::layer_fn(Stamp))
}

/// The client side: one interceptor.
pub fn call(channel: duet::Channel) -> duet::Channel {
    let token: duet::metadata::MetadataValue<_> = TOKEN.parse().expect("ASCII");
    channel.interceptor(move |mut req| {
        req.metadata_mut().insert("authorization", token.clone());
        Ok(req)
    })
}

/// Adds `x-served-by` to every response.
#[derive(Clone)]
struct Stamp(CallService);

impl tower::Service<Request<()>> for Stamp {
    type Response = Response<()>;
    type Error = Status;
    type Future = BoxCallFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Status>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: Request<()>) -> Self::Future {
        let call = self.0.call(req);
        Box::pin(async move {
            let mut resp = call.await?;
            resp.metadata_mut().insert("x-served-by", duet::metadata::MetadataValue::from_static("bench"));
            Ok(resp)
        })
    }
}
