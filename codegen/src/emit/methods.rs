//! The `<service>_methods` module: one `duet::MethodDesc` per method.

use proc_macro2::TokenStream;
use quote::quote;

use super::model::{Kind, ServiceModel};
use crate::options::Codec;

pub(crate) fn emit(s: &ServiceModel) -> TokenStream {
    let module = &s.methods_mod;
    let fq = &s.fq_name;
    let config_name = &s.config_name;
    let codec = match s.codec {
        Codec::Postcard => quote!(::duet::WireCodec::Postcard),
        Codec::Protobuf => quote!(::duet::WireCodec::Protobuf),
    };
    let consts = s.methods.iter().map(|m| {
        let name = &m.const_ident;
        let path = &m.path;
        let method = &m.proto_name;
        let kind = match m.kind {
            Kind::Unary => quote!(Unary),
            Kind::ServerStreaming => quote!(ServerStreaming),
            Kind::ClientStreaming => quote!(ClientStreaming),
            Kind::Bidi => quote!(Bidi),
        };
        let idempotent = m.idempotent;
        let fingerprint = proc_macro2::Literal::u64_suffixed(m.fingerprint);
        let doc = format!(" `{path}`");
        quote! {
            #[doc = #doc]
            pub const #name: ::duet::MethodDesc = ::duet::MethodDesc {
                path: #path,
                service: #fq,
                method: #method,
                config_name: #config_name,
                kind: ::duet::MethodKind::#kind,
                idempotent: #idempotent,
                fingerprint: #fingerprint,
                codec: #codec,
            };
        }
    });
    let doc = format!(" Method descriptors of `{fq}`, as both transports see them.");
    quote! {
        #[doc = #doc]
        pub mod #module {
            #(#consts)*
        }
    }
}
