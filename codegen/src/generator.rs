//! The prost `ServiceGenerator` that runs tonic's generator and then appends duet's code.

use std::collections::HashMap;

use prost_build::{Service, ServiceGenerator};

use crate::emit;
use crate::options::{Codec, ServiceOptions};

pub(crate) struct DuetGenerator {
    pub tonic: Box<dyn ServiceGenerator>,
    pub build_server: bool,
    pub build_client: bool,
    /// Services given Iroh stubs, by full or short name; `None` means all.
    pub iroh_only: Option<Vec<String>>,
    pub codecs: HashMap<String, Codec>,
    pub config_names: HashMap<String, String>,
    pub fingerprints: HashMap<(String, String), u64>,
}

fn lookup<'a, T>(map: &'a HashMap<String, T>, fq: &str, short: &str) -> Option<&'a T> {
    map.get(fq).or_else(|| map.get(short))
}

impl ServiceGenerator for DuetGenerator {
    fn generate(&mut self, service: Service, buf: &mut String) {
        let fq = crate::fq_name(&service.package, &service.proto_name);
        let short = service.proto_name.as_str();
        let opts = ServiceOptions {
            iroh: self.iroh_only.as_ref().is_none_or(|names| names.iter().any(|n| n == &fq || n == short)),
            codec: lookup(&self.codecs, &fq, short).copied().unwrap_or_default(),
            config_name: lookup(&self.config_names, &fq, short).cloned(),
        };
        let fingerprints = &self.fingerprints;
        let model = emit::model::ServiceModel::new(&service, &opts, self.build_server, self.build_client, |i, o| {
            fingerprints.get(&(i.to_owned(), o.to_owned())).copied().unwrap_or_default()
        });
        let mut tonic_code = String::new();
        self.tonic.generate(service, &mut tonic_code);
        buf.push_str(&route_tonic_paths(&tonic_code));
        buf.push_str(&emit::service(&model));
    }

    fn finalize(&mut self, buf: &mut String) {
        let mut extra = String::new();
        self.tonic.finalize(&mut extra);
        buf.push_str(&route_tonic_paths(&extra));
    }

    fn finalize_package(&mut self, package: &str, buf: &mut String) {
        let mut extra = String::new();
        self.tonic.finalize_package(package, &mut extra);
        buf.push_str(&route_tonic_paths(&extra));
    }
}

/// tonic's stubs name the `tonic` crate by its bare name; routing those paths through duet's
/// re-export means a user's crate needs only `duet` as a dependency.
fn route_tonic_paths(code: &str) -> String {
    let mut out = String::with_capacity(code.len() + 256);
    let bytes = code.as_bytes();
    let mut i = 0;
    while i < code.len() {
        let rest = &code[i..];
        let boundary =
            i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_' || bytes[i - 1] == b':');
        if boundary && rest.starts_with("tonic::") {
            out.push_str("::duet::__codegen::tonic::");
            i += "tonic::".len();
        } else {
            let ch = rest.chars().next().expect("non-empty");
            out.push(ch);
            i += ch.len_utf8();
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::route_tonic_paths;

    #[test]
    fn only_bare_tonic_paths_are_rerouted() {
        let code = "use tonic::codegen::*; x: ::tonic::A; my_tonic::B; tonic_prost::C; (tonic::D)";
        assert_eq!(
            route_tonic_paths(code),
            "use ::duet::__codegen::tonic::codegen::*; x: ::tonic::A; my_tonic::B; tonic_prost::C; \
             (::duet::__codegen::tonic::D)"
        );
    }
}
