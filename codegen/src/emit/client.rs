//! `<Service>Client`: the transport-agnostic client over a `duet::Channel`.

use proc_macro2::TokenStream;
use quote::quote;

use super::model::{Kind, ServiceModel};

pub(crate) fn emit(s: &ServiceModel) -> TokenStream {
    let client = &s.client_ident;
    let methods_mod = &s.methods_mod;
    let fq = &s.fq_name;
    let methods = s.methods.iter().map(|m| {
        let ident = &m.client_ident;
        let input = &m.input;
        let output = &m.output;
        let desc = &m.const_ident;
        let docs = m.docs_or("Calls");
        match m.kind {
            Kind::Unary => quote! {
                #docs
                pub async fn #ident(&self, request: impl ::duet::IntoRequest<#input>)
                    -> ::core::result::Result<::duet::Response<#output>, ::duet::Status> {
                    self.channel.unary(::duet::IntoRequest::into_request(request), &#methods_mod::#desc, &self.options).await
                }
            },
            Kind::ServerStreaming => quote! {
                #docs
                pub async fn #ident(&self, request: impl ::duet::IntoRequest<#input>)
                    -> ::core::result::Result<::duet::Response<::duet::Streaming<#output>>, ::duet::Status> {
                    self.channel.server_streaming(::duet::IntoRequest::into_request(request), &#methods_mod::#desc, &self.options).await
                }
            },
            Kind::ClientStreaming => quote! {
                #docs
                pub async fn #ident(&self, request: impl ::duet::IntoStreamingRequest<Message = #input>)
                    -> ::core::result::Result<::duet::Response<#output>, ::duet::Status> {
                    self.channel
                        .client_streaming(::duet::IntoStreamingRequest::into_streaming_request(request), &#methods_mod::#desc, &self.options)
                        .await
                }
            },
            Kind::Bidi => quote! {
                #docs
                pub async fn #ident(&self, request: impl ::duet::IntoStreamingRequest<Message = #input>)
                    -> ::core::result::Result<::duet::Response<::duet::Streaming<#output>>, ::duet::Status> {
                    self.channel.bidi(::duet::IntoStreamingRequest::into_streaming_request(request), &#methods_mod::#desc, &self.options).await
                }
            },
        }
    });
    let doc = format!(
        " Calls `{fq}` through a [`duet::Channel`]: over gRPC or Iroh, as the channel routes it. Each \
         response carries the [`duet::Transport`] that answered in its extensions. Calls take `&self`: \
         clone the client (a few reference counts) to call from several tasks."
    );
    quote! {
        #[doc = #doc]
        #[derive(::core::fmt::Debug, ::core::clone::Clone)]
        pub struct #client {
            channel: ::duet::Channel,
            options: ::duet::CallOptions,
        }

        // Method names come from the proto: an rpc `IntoIter` or `FromArc` takes `&self` like every other.
        #[allow(clippy::wrong_self_convention)]
        impl #client {
            /// A client over `channel`.
            pub fn new(channel: ::duet::Channel) -> Self {
                Self { channel, options: ::duet::CallOptions::default() }
            }

            /// Default deadline of every call (a shorter `Request::set_timeout` wins).
            pub fn with_default_timeout(mut self, timeout: ::core::time::Duration) -> Self {
                self.options.timeout = ::core::option::Option::Some(timeout);
                self
            }

            /// Largest response message accepted (default 4 MiB).
            pub fn max_decoding_message_size(mut self, limit: usize) -> Self {
                self.options.limits.max_decoding_message_size = limit;
                self
            }

            /// Largest request message sent (default unlimited).
            pub fn max_encoding_message_size(mut self, limit: usize) -> Self {
                self.options.limits.max_encoding_message_size = limit;
                self
            }

            /// Compresses requests with `encoding`, on both transports (as tonic's `send_compressed`);
            /// a server that does not accept it refuses the call `UNIMPLEMENTED`.
            pub fn send_compressed(mut self, encoding: ::duet::CompressionEncoding) -> Self {
                self.options.compression = self.options.compression.send(encoding);
                self
            }

            /// Accepts responses compressed with `encoding` and says so in `grpc-accept-encoding`, on
            /// both transports (as tonic's `accept_compressed`).
            pub fn accept_compressed(mut self, encoding: ::duet::CompressionEncoding) -> Self {
                self.options.compression = self.options.compression.accept(encoding);
                self
            }

            /// The channel calls go through.
            pub fn channel(&self) -> &::duet::Channel {
                &self.channel
            }

            #(#methods)*
        }
    }
}
