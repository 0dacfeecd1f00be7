//! What the emitters need to know about a service, computed once from prost's view of it.

use heck::{ToShoutySnakeCase, ToSnakeCase};
use proc_macro2::{Ident, Span, TokenStream};
use prost_build::{Comments, Service};
use quote::{format_ident, quote};

use crate::options::{Codec, ServiceOptions};

/// gRPC's four call shapes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Unary,
    ServerStreaming,
    ClientStreaming,
    Bidi,
}

pub(crate) struct MethodModel {
    /// `/pkg.Service/Method`.
    pub path: String,
    /// The method's name in the service trait.
    pub ident: Ident,
    /// The method's name on the generated client: [`ident`](Self::ident), or that with a `_` appended
    /// when it is one of [`CLIENT_RESERVED`].
    pub client_ident: Ident,
    pub proto_name: String,
    pub const_ident: Ident,
    pub input: syn::Type,
    pub output: syn::Type,
    pub kind: Kind,
    pub idempotent: bool,
    pub fingerprint: u64,
    pub docs: TokenStream,
}

pub(crate) struct ServiceModel {
    pub fq_name: String,
    pub trait_ident: Ident,
    pub server_ident: Ident,
    pub client_ident: Ident,
    pub tonic_ident: Ident,
    pub methods_mod: Ident,
    pub config_name: String,
    pub codec: Codec,
    pub iroh: bool,
    pub build_server: bool,
    pub build_client: bool,
    pub docs: TokenStream,
    pub methods: Vec<MethodModel>,
}

/// `#[doc]` attributes from proto comments (already escaped by [`crate::docs::text`]).
pub(crate) fn docs(comments: &Comments) -> TokenStream {
    let lines = comments.leading.iter().flat_map(|c| c.lines()).map(|l| {
        let line = format!(" {}", crate::docs::link_urls(l.trim_start()));
        quote!(#[doc = #line])
    });
    quote!(#(#lines)*)
}

/// Names an rpc's client method cannot have: the generated client's own methods, and the by-value
/// methods every Rust value has (`Into::into`, `TryInto::try_into`), which method-call syntax would
/// pick over an rpc of the same name. An rpc with one of these names is called as the name with `_`
/// appended on the client (as prost appends `_` to names Rust reserves); the service trait keeps it.
pub const CLIENT_RESERVED: &[&str] = &[
    "new",
    "channel",
    "with_default_timeout",
    "max_decoding_message_size",
    "max_encoding_message_size",
    "send_compressed",
    "accept_compressed",
    "into",
    "try_into",
];

fn client_ident(name: &str) -> Ident {
    if CLIENT_RESERVED.contains(&name) { format_ident!("{name}_") } else { ident(name) }
}

fn parse_type(path: &str) -> syn::Type {
    syn::parse_str(path).unwrap_or_else(|e| panic!("prost produced a type path duet cannot parse ({path}): {e}"))
}

fn ident(name: &str) -> Ident {
    // prost's snake_case names of keywords come as `r#type`.
    match name.strip_prefix("r#") {
        Some(raw) => Ident::new_raw(raw, Span::call_site()),
        None => syn::parse_str::<Ident>(name).unwrap_or_else(|_| Ident::new_raw(name, Span::call_site())),
    }
}

impl ServiceModel {
    pub fn new(
        svc: &Service,
        opts: &ServiceOptions,
        build_server: bool,
        build_client: bool,
        fingerprint: impl Fn(&str, &str) -> u64,
    ) -> Self {
        let fq_name = crate::fq_name(&svc.package, &svc.proto_name);
        let fq_name = fq_name.as_str();
        let snake = svc.name.to_snake_case();
        let methods = svc
            .methods
            .iter()
            .map(|m| {
                let kind = match (m.client_streaming, m.server_streaming) {
                    (false, false) => Kind::Unary,
                    (false, true) => Kind::ServerStreaming,
                    (true, false) => Kind::ClientStreaming,
                    (true, true) => Kind::Bidi,
                };
                // IdempotencyLevel: 1 = NO_SIDE_EFFECTS, 2 = IDEMPOTENT.
                let idempotent = matches!(m.options.idempotency_level, Some(1 | 2));
                let fingerprint = match opts.codec {
                    Codec::Postcard => fingerprint(&m.input_proto_type, &m.output_proto_type),
                    Codec::Protobuf => PROTOBUF_FINGERPRINT,
                };
                MethodModel {
                    path: format!("/{fq_name}/{}", m.proto_name),
                    ident: ident(&m.name),
                    client_ident: client_ident(&m.name),
                    proto_name: m.proto_name.clone(),
                    const_ident: format_ident!("{}", m.proto_name.to_shouty_snake_case()),
                    input: parse_type(&m.input_type),
                    output: parse_type(&m.output_type),
                    kind,
                    idempotent,
                    fingerprint,
                    docs: docs(&m.comments),
                }
            })
            .collect();
        Self {
            config_name: opts.config_name.clone().unwrap_or_else(|| svc.proto_name.to_snake_case()),
            trait_ident: format_ident!("{}", svc.name),
            server_ident: format_ident!("{}Server", svc.name),
            client_ident: format_ident!("{}Client", svc.name),
            tonic_ident: format_ident!("{}Tonic", svc.name),
            methods_mod: format_ident!("{}_methods", snake),
            codec: opts.codec,
            iroh: opts.iroh,
            build_server,
            build_client,
            docs: docs(&svc.comments),
            fq_name: fq_name.to_owned(),
            methods,
        }
    }
}

impl ServiceModel {
    /// The names the service's items take in the package's Rust module.
    pub fn item_names(&self) -> Vec<String> {
        let mut names = vec![self.trait_ident.to_string(), self.methods_mod.to_string()];
        if self.build_server {
            names.extend([self.server_ident.to_string(), self.tonic_ident.to_string()]);
        }
        if self.build_client {
            names.push(self.client_ident.to_string());
        }
        names
    }

    /// Methods whose Rust names collide: two rpcs whose names differ only in case or underscores.
    pub fn method_collisions(&self) -> Vec<String> {
        let mut problems = vec![];
        for (i, a) in self.methods.iter().enumerate() {
            for b in &self.methods[..i] {
                let (x, y) = (&a.proto_name, &b.proto_name);
                // heck drops underscores, so no rpc's name ends in `_` and a client rename cannot meet
                // another rpc: only names that differ in case or underscores can.
                if a.ident == b.ident || a.const_ident == b.const_ident {
                    problems.push(format!(
                        "rpcs {x} and {y} of {} both become `{}` in Rust; rename one in the proto",
                        self.fq_name, a.ident
                    ));
                }
            }
        }
        problems
    }
}

/// Must equal `duet::__codegen::PROTOBUF_FINGERPRINT`.
pub(crate) const PROTOBUF_FINGERPRINT: u64 = 0x7072_6f74_6f62_7566;

impl Kind {
    /// The name duet's serving and calling functions for this shape have, on both transports.
    pub fn shape_ident(self) -> TokenStream {
        match self {
            Kind::Unary => quote!(unary),
            Kind::ServerStreaming => quote!(server_streaming),
            Kind::ClientStreaming => quote!(client_streaming),
            Kind::Bidi => quote!(bidi),
        }
    }
}

impl MethodModel {
    /// The proto comments, or a line naming the method and its shape when the proto has none.
    pub fn docs_or(&self, what: &str) -> TokenStream {
        if !self.docs.is_empty() {
            return self.docs.clone();
        }
        let shape = match self.kind {
            Kind::Unary => "unary",
            Kind::ServerStreaming => "server streaming",
            Kind::ClientStreaming => "client streaming",
            Kind::Bidi => "bidi streaming",
        };
        let line = format!(" {what} `{}` ({shape}).", self.path);
        quote!(#[doc = #line])
    }

    /// The request type a handler receives.
    pub fn handler_request(&self) -> TokenStream {
        let input = &self.input;
        match self.kind {
            Kind::Unary | Kind::ServerStreaming => quote!(::duet::Request<#input>),
            Kind::ClientStreaming | Kind::Bidi => quote!(::duet::Request<::duet::Streaming<#input>>),
        }
    }

    /// The success type a handler returns.
    pub fn handler_response(&self) -> TokenStream {
        let output = &self.output;
        match self.kind {
            Kind::Unary | Kind::ClientStreaming => quote!(::duet::Response<#output>),
            Kind::ServerStreaming | Kind::Bidi => quote!(::duet::Response<::duet::BoxStream<#output>>),
        }
    }
}
