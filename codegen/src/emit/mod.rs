//! duet's own code per service, in the package file prost writes.

mod client;
mod methods;
pub(crate) mod model;
mod server;
mod service_trait;
mod tonic_service;

use model::ServiceModel;

/// All of duet's items for one service, formatted.
pub(crate) fn service(s: &ServiceModel) -> String {
    let mut items = vec![methods::emit(s), service_trait::emit(s)];
    if s.build_server {
        items.push(tonic_service::emit(s));
        items.push(server::emit(s));
    }
    if s.build_client {
        items.push(client::emit(s));
    }
    let tokens = quote::quote!(#(#items)*);
    let file: syn::File = syn::parse2(tokens).unwrap_or_else(|e| panic!("duet generated invalid Rust: {e}"));
    prettyplease::unparse(&file)
}
