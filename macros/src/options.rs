//! The options `#[duet::service(...)]` takes: none, with errors that say where each setting lives.

use proc_macro2::TokenStream;
use syn::parse::Parser;

/// Refuses every option: the attribute's behaviour is fixed, and a service's config name (the one
/// clients route by) is compiled into the generated code, so setting it on an impl would mislead.
pub(crate) fn parse(attr: TokenStream) -> syn::Result<()> {
    let parser = syn::meta::parser(|meta| {
        if meta.path.is_ident("config_name") {
            Err(meta.error(
                "#[duet::service] does not take `config_name`: a service's config name is set where its code is \
                 generated, with `duet_codegen::Builder::config_name(\"pkg.Service\", \"name\")` in build.rs",
            ))
        } else {
            Err(meta.error("#[duet::service] takes no options: write `#[duet::service]`"))
        }
    });
    parser.parse2(attr)
}
