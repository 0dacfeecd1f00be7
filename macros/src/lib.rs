//! Attribute macros for duet service impls. Use them through `duet` (`#[duet::service]`).

#![forbid(unsafe_code)]

mod options;
mod rewrite;

use proc_macro::TokenStream;

/// Marks an impl of a duet-generated service trait.
///
/// ```text
/// #[duet::service]
/// impl pb::Health for MyHealth {
///     async fn check(&self, req: Request<CheckRequest>) -> Result<Response<CheckReply>, Status> { … }
///     // Streaming methods return any stream, a Vec, or a tokio mpsc receiver: no associated types,
///     // no boxing.
///     async fn watch(&self, req: Request<CheckRequest>)
///         -> Result<Response<impl Stream<Item = Result<CheckReply, Status>> + Send + 'static>, Status> { … }
/// }
/// ```
///
/// What it does:
/// - checks every method is an `async fn` taking `&self`, with an error on the method that says the fix;
/// - rewrites a server-streaming or bidi method whose response is `impl Stream<Item = Result<T, Status>>`,
///   `Vec<T>`, `tokio::sync::mpsc::Receiver<Result<T, Status>>` or `UnboundedReceiver<…>` into the
///   trait's `Response<duet::BoxStream<T>>`;
/// - takes no options: a service's config name (what `prefer_iroh_for` and the metrics use) is set where
///   its code is generated, with `duet_codegen::Builder::config_name`.
///
/// Everything else (a method the service lacks, a wrong request type) is left to rustc, whose error
/// points at the method in your impl.
#[proc_macro_attribute]
pub fn service(attr: TokenStream, item: TokenStream) -> TokenStream {
    match rewrite::service(attr.into(), item.into()) {
        Ok(tokens) => tokens.into(),
        Err(e) => e.to_compile_error().into(),
    }
}
