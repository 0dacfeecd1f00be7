//! The options `#[duet::service(...)]` takes.

use proc_macro2::TokenStream;
use syn::LitStr;
use syn::parse::Parser;

/// Parsed attribute options.
#[derive(Default)]
pub(crate) struct Options {
    pub config_name: Option<LitStr>,
}

pub(crate) fn parse(attr: TokenStream) -> syn::Result<Options> {
    let mut options = Options::default();
    let parser = syn::meta::parser(|meta| {
        if meta.path.is_ident("config_name") {
            let value: LitStr = meta.value()?.parse()?;
            if value.value().is_empty() || value.value().contains(char::is_whitespace) {
                return Err(syn::Error::new(value.span(), "config_name must be a snake_case name, like \"status\""));
            }
            options.config_name = Some(value);
            Ok(())
        } else {
            Err(meta.error("unknown option; #[duet::service] takes `config_name = \"name\"`"))
        }
    });
    parser.parse2(attr)?;
    Ok(options)
}
