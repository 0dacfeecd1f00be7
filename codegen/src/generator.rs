//! The prost `ServiceGenerator` that writes duet's code per service, and tonic-build's own stubs
//! beside it when asked.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use prost_build::{Service, ServiceGenerator};

use crate::emit;
use crate::options::{Codec, ServiceOptions};

pub(crate) struct DuetGenerator {
    /// tonic-build's generator, when its stubs were asked for (`Builder::tonic_stubs`).
    pub tonic: Option<Box<dyn ServiceGenerator>>,
    pub build_server: bool,
    pub build_client: bool,
    /// Services given Iroh stubs, by full or short name; `None` means all.
    pub iroh_only: Option<Vec<String>>,
    pub codecs: HashMap<String, Codec>,
    pub config_names: HashMap<String, String>,
    pub fingerprints: HashMap<(String, String), u64>,
    /// Problems found while generating, which `compile` turns into an error after prost returns.
    pub problems: Rc<RefCell<Vec<String>>>,
    /// Per package, the Rust names already taken and what took them (prost's messages and enums
    /// first, then each service's items as they are generated).
    pub taken: HashMap<String, HashMap<String, String>>,
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
        let problems = &self.problems;
        let model = emit::model::ServiceModel::new(&service, &opts, self.build_server, self.build_client, |i, o| {
            // Both come from the same descriptors, so a miss is a duet bug; a zero would silently
            // disable the schema check, so it is an error instead.
            fingerprints.get(&(i.to_owned(), o.to_owned())).copied().unwrap_or_else(|| {
                problems.borrow_mut().push(format!("no schema fingerprint for {fq} ({i} -> {o})"));
                0
            })
        });
        let taken = self.taken.entry(service.package.clone()).or_default();
        for name in model.item_names() {
            match taken.get(&name) {
                Some(owner) => problems.borrow_mut().push(format!(
                    "service {fq} generates `{name}`, a name {owner} already has in Rust; rename one of them in the proto"
                )),
                None => {
                    taken.insert(name, format!("service {fq}"));
                }
            }
        }
        problems.borrow_mut().extend(model.method_collisions());
        if let Some(tonic) = &mut self.tonic {
            tonic.generate(service, buf);
        }
        buf.push_str(&emit::service(&model));
    }

    fn finalize(&mut self, buf: &mut String) {
        if let Some(tonic) = &mut self.tonic {
            tonic.finalize(buf);
        }
    }

    fn finalize_package(&mut self, package: &str, buf: &mut String) {
        if let Some(tonic) = &mut self.tonic {
            tonic.finalize_package(package, buf);
        }
    }
}
