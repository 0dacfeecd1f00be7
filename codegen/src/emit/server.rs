//! `<Service>Server<T>`: mounts one impl on gRPC (through the tonic adapter) and on duet's Iroh wire.

use proc_macro2::TokenStream;
use quote::quote;

use super::model::{Kind, ServiceModel};

pub(crate) fn emit(s: &ServiceModel) -> TokenStream {
    let server = &s.server_ident;
    let tr = &s.trait_ident;
    let tonic_adapter = &s.tonic_ident;
    let tonic_mod = &s.tonic_server_mod;
    let methods_mod = &s.methods_mod;
    let fq = &s.fq_name;
    let config_name = &s.config_name;

    let grpc = quote! {
        fn add_grpc(
            &self,
            routes: &mut ::duet::__codegen::tonic::service::RoutesBuilder,
            limits: &::duet::Limits,
            compression: &::duet::Compression,
        ) {
            let mut service = #tonic_mod::#server::from_arc(::std::sync::Arc::new(#tonic_adapter(self.inner.clone())))
                .max_decoding_message_size(limits.max_decoding_message_size)
                .max_encoding_message_size(limits.max_encoding_message_size);
            if let ::core::option::Option::Some(encoding) = compression.sends() {
                service = service.send_compressed(encoding);
            }
            for encoding in compression.accepted() {
                service = service.accept_compressed(*encoding);
            }
            routes.add_service(service);
        }
    };

    let descs = s.methods.iter().map(|m| {
        let desc = &m.const_ident;
        quote!(#methods_mod::#desc)
    });
    let methods_fn = quote! {
        fn methods(&self) -> &'static [::duet::MethodDesc] {
            &[#(#descs),*]
        }
    };

    let iroh_fn = if s.iroh {
        quote! {
            fn iroh(&self) -> ::core::option::Option<::std::sync::Arc<dyn ::duet::__codegen::IrohService>> {
                ::core::option::Option::Some(::std::sync::Arc::new(self.clone()))
            }
        }
    } else {
        quote! {
            fn iroh(&self) -> ::core::option::Option<::std::sync::Arc<dyn ::duet::__codegen::IrohService>> {
                ::core::option::Option::None
            }
        }
    };

    let arms = s.methods.iter().map(|m| {
        let proto = &m.proto_name;
        let ident = &m.ident;
        let desc = &m.const_ident;
        let shape = match m.kind {
            Kind::Unary => quote!(unary),
            Kind::ServerStreaming => quote!(server_streaming),
            Kind::ClientStreaming => quote!(client_streaming),
            Kind::Bidi => quote!(bidi),
        };
        quote! {
            #proto => call.#shape(&#methods_mod::#desc, move |request| async move { inner.#ident(request).await }),
        }
    });
    let iroh_impl = s.iroh.then(|| {
        quote! {
            impl<T: #tr> ::duet::__codegen::IrohService for #server<T> {
                fn name(&self) -> &'static str {
                    #fq
                }

                fn call(
                    &self,
                    method: &str,
                    call: ::duet::__codegen::ServerCall,
                ) -> ::duet::__codegen::BoxFuture<'static, ()> {
                    let inner = self.inner.clone();
                    match method {
                        #(#arms)*
                        _ => call.unimplemented(method),
                    }
                }
            }
        }
    });

    let transports = if s.iroh { "gRPC and Iroh" } else { "gRPC (Iroh stubs were not generated for this service)" };
    let doc = format!(" Serves any [`{tr}`] impl over {transports}: add it to a [`duet::Server`].");
    let config_doc = format!(
        " The name operators use for this service in config: `{config_name}`, unless the impl or \
         `with_config_name` changed it."
    );
    quote! {
        #[doc = #doc]
        #[derive(Debug)]
        pub struct #server<T> {
            inner: ::std::sync::Arc<T>,
            config_name: ::std::borrow::Cow<'static, str>,
        }

        impl<T> ::core::clone::Clone for #server<T> {
            fn clone(&self) -> Self {
                Self { inner: self.inner.clone(), config_name: self.config_name.clone() }
            }
        }

        impl<T: #tr> #server<T> {
            /// Wraps an impl.
            pub fn new(inner: T) -> Self {
                Self::from_arc(::std::sync::Arc::new(inner))
            }

            /// Wraps an impl already shared elsewhere.
            pub fn from_arc(inner: ::std::sync::Arc<T>) -> Self {
                let name = T::CONFIG_NAME.unwrap_or(#config_name);
                Self { inner, config_name: ::std::borrow::Cow::Borrowed(name) }
            }

            /// Sets the name this service goes by in config (`prefer_iroh_for`).
            pub fn with_config_name(mut self, name: impl ::core::convert::Into<::std::string::String>) -> Self {
                self.config_name = ::std::borrow::Cow::Owned(name.into());
                self
            }

            #[doc = #config_doc]
            pub fn config_name(&self) -> &str {
                &self.config_name
            }

            /// The same impl as a plain tonic service, to mount on a tonic router of your own.
            pub fn into_tonic(self) -> #tonic_mod::#server<#tonic_adapter<T>> {
                #tonic_mod::#server::new(#tonic_adapter(self.inner))
            }
        }

        impl<T: #tr> ::duet::Service for #server<T> {
            fn name(&self) -> &'static str {
                #fq
            }

            fn config_name(&self) -> &str {
                &self.config_name
            }

            #methods_fn
            #grpc
            #iroh_fn
        }

        #iroh_impl
    }
}
