//! The one trait a user implements per service.

use proc_macro2::TokenStream;
use quote::quote;

use super::model::ServiceModel;

pub(crate) fn emit(s: &ServiceModel) -> TokenStream {
    let name = &s.trait_ident;
    let docs = &s.docs;
    let server = &s.server_ident;
    let methods = s.methods.iter().map(|m| {
        let ident = &m.ident;
        let req = m.handler_request();
        let resp = m.handler_response();
        let docs = m.docs_or("Handles");
        quote! {
            #docs
            fn #ident(
                &self,
                request: #req,
            ) -> impl ::core::future::Future<Output = ::core::result::Result<#resp, ::duet::Status>> + ::core::marker::Send;
        }
    });
    let transport_doc = format!(
        " Implement it once with `async fn`s (or `#[duet::service]`); [`{server}`] serves the impl over gRPC and \
         Iroh at once."
    );
    let empty_line = if s.docs.is_empty() { quote!() } else { quote!(#[doc = ""]) };
    // Method names come from the proto: an rpc `IntoIter` or `New` takes `&self` like every other.
    quote! {
        #docs
        #empty_line
        #[doc = #transport_doc]
        #[allow(clippy::wrong_self_convention)]
        pub trait #name: ::core::marker::Send + ::core::marker::Sync + 'static {
            #(#methods)*
        }
    }
}
