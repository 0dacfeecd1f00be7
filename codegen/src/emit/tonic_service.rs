//! `<Service>Tonic<T>`: the impl as a tonic service, what the gRPC port routes the service's paths to.
//! Each arm hands the request to duet's one serving function for the method's call shape.

use proc_macro2::TokenStream;
use quote::quote;

use super::model::ServiceModel;

pub(crate) fn emit(s: &ServiceModel) -> TokenStream {
    let tonic_service = &s.tonic_ident;
    let tr = &s.trait_ident;
    let server = &s.server_ident;
    let fq = &s.fq_name;
    let tonic = quote!(::duet::__codegen::tonic);
    let http = quote!(#tonic::codegen::http);
    let arms = s.methods.iter().map(|m| {
        let path = &m.path;
        let ident = &m.ident;
        let shape = m.kind.shape_ident();
        quote! {
            #path => {
                let inner = ::std::sync::Arc::clone(&self.inner);
                ::duet::__codegen::grpc::#shape(self.settings, request, move |request| async move {
                    <__Impl as #tr>::#ident(&*inner, request).await
                })
            }
        }
    });
    // An empty service answers every path UNIMPLEMENTED, with nothing to match.
    let dispatch = if s.methods.is_empty() {
        quote! {
            let _ = request;
            ::duet::__codegen::grpc::unimplemented()
        }
    } else {
        quote! {
            match request.uri().path() {
                #(#arms)*
                _ => ::duet::__codegen::grpc::unimplemented(),
            }
        }
    };
    let doc = format!(
        " The [`{tr}`] impl as a tonic service, gRPC only: what [`{server}`] mounts on its gRPC port, and what \
         [`{server}::into_tonic`] gives to mount on a tonic router of your own."
    );
    quote! {
        #[doc = #doc]
        #[derive(::core::fmt::Debug)]
        pub struct #tonic_service<__Impl> {
            inner: ::std::sync::Arc<__Impl>,
            settings: ::duet::__codegen::grpc::GrpcSettings,
        }

        impl<__Impl> #tonic_service<__Impl> {
            /// The largest request message accepted (tonic's default: 4 MiB).
            pub fn max_decoding_message_size(mut self, limit: usize) -> Self {
                self.settings = self.settings.max_decoding_message_size(limit);
                self
            }

            /// The largest response message sent (tonic's default: no limit).
            pub fn max_encoding_message_size(mut self, limit: usize) -> Self {
                self.settings = self.settings.max_encoding_message_size(limit);
                self
            }

            /// Compresses responses with `encoding` when the client accepts it.
            pub fn send_compressed(mut self, encoding: ::duet::CompressionEncoding) -> Self {
                self.settings = self.settings.send_compressed(encoding);
                self
            }

            /// Accepts requests compressed with `encoding`.
            pub fn accept_compressed(mut self, encoding: ::duet::CompressionEncoding) -> Self {
                self.settings = self.settings.accept_compressed(encoding);
                self
            }
        }

        impl<__Impl> ::core::clone::Clone for #tonic_service<__Impl> {
            fn clone(&self) -> Self {
                Self { inner: ::std::sync::Arc::clone(&self.inner), settings: self.settings }
            }
        }

        impl<__Impl, __Body> #tonic::codegen::Service<#http::Request<__Body>> for #tonic_service<__Impl>
        where
            __Impl: #tr,
            __Body: #tonic::codegen::Body + ::core::marker::Send + 'static,
            __Body::Error: ::core::convert::Into<#tonic::codegen::StdError> + ::core::marker::Send + 'static,
        {
            type Response = #http::Response<#tonic::body::Body>;
            type Error = ::core::convert::Infallible;
            type Future = ::duet::__codegen::grpc::GrpcFuture;

            fn poll_ready(
                &mut self,
                _: &mut ::core::task::Context<'_>,
            ) -> ::core::task::Poll<::core::result::Result<(), Self::Error>> {
                ::core::task::Poll::Ready(::core::result::Result::Ok(()))
            }

            fn call(&mut self, request: #http::Request<__Body>) -> Self::Future {
                #dispatch
            }
        }

        impl<__Impl> #tonic::server::NamedService for #tonic_service<__Impl> {
            const NAME: &'static str = #fq;
        }
    }
}
