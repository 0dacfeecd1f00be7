//! `<Service>Server<T>`: mounts one impl on gRPC (through the tonic adapter) and on duet's Iroh wire.

use proc_macro2::TokenStream;
use quote::quote;

use super::model::ServiceModel;

pub(crate) fn emit(s: &ServiceModel) -> TokenStream {
    let server = &s.server_ident;
    let tr = &s.trait_ident;
    let tonic_service = &s.tonic_ident;
    let methods_mod = &s.methods_mod;
    let fq = &s.fq_name;

    let grpc = quote! {
        fn add_grpc(
            &self,
            routes: &mut ::duet::__codegen::tonic::service::RoutesBuilder,
            limits: &::duet::Limits,
            compression: &::duet::Compression,
        ) {
            routes.add_service(#tonic_service {
                inner: ::std::sync::Arc::clone(&self.inner),
                settings: ::duet::__codegen::grpc::GrpcSettings::new(limits, compression),
            });
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
                ::core::option::Option::Some(::std::sync::Arc::new(::core::clone::Clone::clone(self)))
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
        let shape = m.kind.shape_ident();
        quote! {
            #proto => call.#shape(&#methods_mod::#desc, move |request| async move { <__Impl as #tr>::#ident(&*inner, request).await }),
        }
    });
    // An empty service answers every method UNIMPLEMENTED, with nothing to match or share.
    let dispatch = if s.methods.is_empty() {
        quote!(call.unimplemented(method))
    } else {
        quote! {
            let inner = ::std::sync::Arc::clone(&self.inner);
            match method {
                #(#arms)*
                _ => call.unimplemented(method),
            }
        }
    };
    let iroh_impl = s.iroh.then(|| {
        quote! {
            impl<__Impl: #tr> ::duet::__codegen::IrohService for #server<__Impl> {
                fn name(&self) -> &'static str {
                    #fq
                }

                fn call(
                    &self,
                    method: &str,
                    call: ::duet::__codegen::ServerCall,
                ) -> ::duet::__codegen::BoxFuture<'static, ()> {
                    #dispatch
                }
            }
        }
    });

    let transports = if s.iroh { "gRPC and Iroh" } else { "gRPC (Iroh stubs were not generated for this service)" };
    let doc = format!(" Serves any [`{tr}`] impl over {transports}: add it to a [`duet::Server`].");
    quote! {
        #[doc = #doc]
        #[derive(::core::fmt::Debug)]
        pub struct #server<__Impl> {
            inner: ::std::sync::Arc<__Impl>,
        }

        impl<__Impl> ::core::clone::Clone for #server<__Impl> {
            fn clone(&self) -> Self {
                Self { inner: ::std::sync::Arc::clone(&self.inner) }
            }
        }

        impl<__Impl: #tr> #server<__Impl> {
            /// Wraps an impl.
            pub fn new(inner: __Impl) -> Self {
                Self::from_arc(::std::sync::Arc::new(inner))
            }

            /// Wraps an impl already shared elsewhere.
            pub fn from_arc(inner: ::std::sync::Arc<__Impl>) -> Self {
                Self { inner }
            }

            /// The same impl as a plain tonic service, to mount on a tonic router of your own.
            pub fn into_tonic(self) -> #tonic_service<__Impl> {
                #tonic_service { inner: self.inner, settings: ::core::default::Default::default() }
            }
        }

        impl<__Impl: #tr> ::duet::Service for #server<__Impl> {
            fn name(&self) -> &'static str {
                #fq
            }

            #methods_fn
            #grpc
            #iroh_fn
        }

        #iroh_impl
    }
}
