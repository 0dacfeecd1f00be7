//! Checking and rewriting the methods of a service impl.

use proc_macro2::{Span, TokenStream};
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{FnArg, GenericArgument, ImplItem, ImplItemFn, ItemImpl, PathArguments, ReturnType, Type, TypeParamBound};

use crate::options;

/// How a streaming response is written in the user's method.
enum StreamShape {
    /// The bounds are kept (as a `dyn` alias) so the names they use stay used.
    ImplStream(syn::punctuated::Punctuated<TypeParamBound, syn::Token![+]>),
    Vec,
    Receiver,
    UnboundedReceiver,
}

pub(crate) fn service(attr: TokenStream, item: TokenStream) -> syn::Result<TokenStream> {
    options::parse(attr)?;
    let mut imp: ItemImpl = syn::parse2(item).map_err(|e| {
        syn::Error::new(
            e.span(),
            "#[duet::service] goes on an impl of a generated service trait: `impl pb::Health for MyHealth`",
        )
    })?;
    if imp.trait_.is_none() {
        return Err(syn::Error::new(
            imp.self_ty.span(),
            "#[duet::service] goes on an impl of a generated service trait: write `impl pb::<Service> for MyType`",
        ));
    }
    let mut errors: Option<syn::Error> = None;
    for item in &mut imp.items {
        if let ImplItem::Fn(method) = item
            && let Err(e) = method_fn(method)
        {
            match &mut errors {
                Some(all) => all.combine(e),
                None => errors = Some(e),
            }
        }
    }
    if let Some(e) = errors {
        return Err(e);
    }
    Ok(quote!(#imp))
}

fn method_fn(method: &mut ImplItemFn) -> syn::Result<()> {
    let name = &method.sig.ident;
    if method.sig.asyncness.is_none() {
        return Err(syn::Error::new(
            method.sig.fn_token.span(),
            format!("duet: `{name}` must be an `async fn`: write `async fn {name}(&self, request: …)`"),
        ));
    }
    let takes_ref_self = matches!(method.sig.inputs.first(), Some(FnArg::Receiver(r)) if r.reference.is_some() && r.mutability.is_none());
    if !takes_ref_self {
        let span = method.sig.inputs.first().map_or(name.span(), |a| a.span());
        return Err(syn::Error::new(
            span,
            format!(
                "duet: `{name}` must take `&self` first: write `async fn {name}(&self, request: …)` (calls run \
                 concurrently on one shared service)"
            ),
        ));
    }
    let ReturnType::Type(_, ret) = &method.sig.output else { return Ok(()) };
    let Some((item, shape, span)) = streaming_item(ret)? else { return Ok(()) };
    let keep_names = match &shape {
        StreamShape::ImplStream(bounds) => quote! {
            #[allow(dead_code)]
            type __DuetStreamShape = dyn #bounds;
        },
        _ => quote!(),
    };
    let helper = match shape {
        StreamShape::ImplStream(_) => quote!(box_stream),
        StreamShape::Vec => quote!(box_vec),
        StreamShape::Receiver => quote!(box_receiver),
        StreamShape::UnboundedReceiver => quote!(box_unbounded_receiver),
    };
    let body = &method.block;
    method.sig.output = syn::parse_quote_spanned! {span=>
        -> ::core::result::Result<::duet::Response<::duet::BoxStream<#item>>, ::duet::Status>
    };
    let block = quote_spanned! {span=> {
        #keep_names
        ::duet::__codegen::#helper(async move #body).await
    }};
    method.block = syn::parse2(block)?;
    Ok(())
}

fn last_segment(ty: &Type) -> Option<&syn::PathSegment> {
    match ty {
        Type::Path(p) => p.path.segments.last(),
        _ => None,
    }
}

fn generic_args(seg: &syn::PathSegment) -> Vec<&Type> {
    match &seg.arguments {
        PathArguments::AngleBracketed(a) => a
            .args
            .iter()
            .filter_map(|a| match a {
                GenericArgument::Type(t) => Some(t),
                _ => None,
            })
            .collect(),
        _ => vec![],
    }
}

/// `Result<T, _>` → `T`.
fn ok_type(ty: &Type) -> Option<&Type> {
    let seg = last_segment(ty)?;
    (seg.ident == "Result").then(|| generic_args(seg).first().copied()).flatten()
}

/// For `Result<Response<X>, Status>` where X is a stream shape: the message type and the shape.
fn streaming_item(ret: &Type) -> syn::Result<Option<(Type, StreamShape, Span)>> {
    let Some(response) = ok_type(ret) else { return Ok(None) };
    let Some(seg) = last_segment(response).filter(|s| s.ident == "Response") else { return Ok(None) };
    let Some(inner) = generic_args(seg).first().copied() else { return Ok(None) };
    let span = inner.span();
    match inner {
        Type::ImplTrait(it) => {
            for bound in &it.bounds {
                let TypeParamBound::Trait(t) = bound else { continue };
                let Some(last) = t.path.segments.last().filter(|s| s.ident == "Stream") else { continue };
                if let PathArguments::AngleBracketed(args) = &last.arguments {
                    for a in &args.args {
                        if let GenericArgument::AssocType(at) = a
                            && at.ident == "Item"
                            && let Some(item) = ok_type(&at.ty)
                        {
                            return Ok(Some((item.clone(), StreamShape::ImplStream(it.bounds.clone()), span)));
                        }
                    }
                }
            }
            Err(syn::Error::new(
                span,
                "duet: write a streaming response as `impl Stream<Item = Result<Message, Status>> + Send + 'static`",
            ))
        }
        Type::Path(_) => {
            let seg = last_segment(inner).expect("a path has a last segment");
            let arg = generic_args(seg).first().copied();
            let shape = match seg.ident.to_string().as_str() {
                "Vec" => StreamShape::Vec,
                "Receiver" => StreamShape::Receiver,
                "UnboundedReceiver" => StreamShape::UnboundedReceiver,
                _ => return Ok(None),
            };
            let item = match shape {
                StreamShape::Vec => arg.cloned(),
                _ => arg.and_then(ok_type).cloned(),
            };
            match item {
                Some(item) => Ok(Some((item, shape, span))),
                None => Err(syn::Error::new(
                    span,
                    "duet: a channel response carries `Result<Message, Status>`: write `Receiver<Result<Message, Status>>`",
                )),
            }
        }
        _ => Ok(None),
    }
}
