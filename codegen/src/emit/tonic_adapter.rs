//! `<Service>Tonic<T>`: makes an impl of the duet trait an impl of tonic's generated server trait.

use heck::ToUpperCamelCase;
use proc_macro2::TokenStream;
use quote::{format_ident, quote};

use super::model::{Kind, ServiceModel};

pub(crate) fn emit(s: &ServiceModel) -> TokenStream {
    let adapter = &s.tonic_ident;
    let tr = &s.trait_ident;
    let tonic_mod = &s.tonic_server_mod;
    let tonic = quote!(::duet::__codegen::tonic);
    let methods = s.methods.iter().map(|m| {
        let ident = &m.ident;
        let input = &m.input;
        let output = &m.output;
        let stream_ty = format_ident!("{}Stream", m.proto_name.to_upper_camel_case());
        match m.kind {
            Kind::Unary => quote! {
                async fn #ident(&self, request: #tonic::Request<#input>)
                    -> ::core::result::Result<#tonic::Response<#output>, #tonic::Status> {
                    self.0.#ident(request).await
                }
            },
            Kind::ServerStreaming => quote! {
                type #stream_ty = ::duet::BoxStream<#output>;
                async fn #ident(&self, request: #tonic::Request<#input>)
                    -> ::core::result::Result<#tonic::Response<Self::#stream_ty>, #tonic::Status> {
                    self.0.#ident(request).await
                }
            },
            Kind::ClientStreaming => quote! {
                async fn #ident(&self, request: #tonic::Request<#tonic::Streaming<#input>>)
                    -> ::core::result::Result<#tonic::Response<#output>, #tonic::Status> {
                    self.0.#ident(request.map(::duet::Streaming::from_grpc)).await
                }
            },
            Kind::Bidi => quote! {
                type #stream_ty = ::duet::BoxStream<#output>;
                async fn #ident(&self, request: #tonic::Request<#tonic::Streaming<#input>>)
                    -> ::core::result::Result<#tonic::Response<Self::#stream_ty>, #tonic::Status> {
                    self.0.#ident(request.map(::duet::Streaming::from_grpc)).await
                }
            },
        }
    });
    let doc = format!(" Adapts a [`{tr}`] impl to tonic's `{tonic_mod}::{tr}` trait (the gRPC side).");
    quote! {
        #[doc = #doc]
        #[derive(Debug)]
        pub struct #adapter<T>(pub ::std::sync::Arc<T>);

        #[#tonic::async_trait]
        impl<T: #tr> #tonic_mod::#tr for #adapter<T> {
            #(#methods)*
        }
    }
}
