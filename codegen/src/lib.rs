//! `duet-codegen`: the build.rs side of duet.
//!
//! From `.proto` files (parsed by protox, so no `protoc` is needed) it generates, per package, one Rust
//! file in `OUT_DIR` holding:
//!
//! - the prost messages, with serde derives so they can travel as postcard;
//! - per service, duet's items: the trait `<Service>` the user implements once, `<Service>Tonic<T>`
//!   (the impl as a tonic service: stock gRPC on the wire), `<Service>Server<T>` (mounts the impl on
//!   gRPC and on the Iroh wire), `<Service>Client` (over a `duet::Channel`), and `<service>_methods`
//!   (method descriptors);
//! - tonic-build's own stubs (`<service>_server`, `<service>_client`) only when asked, with
//!   [`Builder::tonic_stubs`].
//!
//! ```no_run
//! // build.rs
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     duet_codegen::configure().compile(&["proto/node.proto"], &["proto"])?;
//!     Ok(())
//! }
//! ```
//!
//! Bring the output in with `duet::include_proto!("package")`, or, when packages import one another,
//! `duet::include_protos!()` which nests every package in modules named after it.

#![forbid(unsafe_code)]

mod bytes_fields;
mod docs;
mod emit;
mod error;
mod generator;
mod options;
mod schema;

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;

pub use emit::model::CLIENT_RESERVED;
pub use error::Error;
pub use options::Codec;

use generator::DuetGenerator;
use schema::Schemas;

/// The file `duet::include_protos!()` includes: every package nested in modules.
pub const INCLUDE_FILE: &str = "_duet_includes.rs";

/// Starts a builder with duet's defaults: server and client code, Iroh stubs for every service,
/// postcard on the Iroh wire, `cargo:rerun-if-changed` for every proto read.
pub fn configure() -> Builder {
    Builder {
        out_dir: None,
        build_server: true,
        build_client: true,
        emit_rerun_if_changed: true,
        file_descriptor_set_path: None,
        type_attributes: vec![],
        message_attributes: vec![],
        enum_attributes: vec![],
        field_attributes: vec![],
        extern_paths: vec![],
        iroh_services: None,
        codecs: HashMap::new(),
        config_names: HashMap::new(),
        tonic_stubs: false,
    }
}

/// Compiles protos with the defaults of [`configure`].
pub fn compile_protos(protos: &[impl AsRef<Path>], includes: &[impl AsRef<Path>]) -> Result<(), Error> {
    configure().compile(protos, includes)
}

/// Code generation settings, in the style of `tonic-build`.
#[derive(Debug, Clone)]
pub struct Builder {
    out_dir: Option<PathBuf>,
    build_server: bool,
    build_client: bool,
    emit_rerun_if_changed: bool,
    file_descriptor_set_path: Option<PathBuf>,
    type_attributes: Vec<(String, String)>,
    message_attributes: Vec<(String, String)>,
    enum_attributes: Vec<(String, String)>,
    field_attributes: Vec<(String, String)>,
    extern_paths: Vec<(String, String)>,
    iroh_services: Option<Vec<String>>,
    codecs: HashMap<String, Codec>,
    config_names: HashMap<String, String>,
    tonic_stubs: bool,
}

/// protobuf wrapper types become primitives and `Empty` becomes `()`, as prost does by default.
const WELL_KNOWN_EXTERNS: [(&str, &str); 10] = [
    (".google.protobuf.Empty", "()"),
    (".google.protobuf.BoolValue", "bool"),
    (".google.protobuf.BytesValue", "::duet::__codegen::prost::bytes::Bytes"),
    (".google.protobuf.DoubleValue", "f64"),
    (".google.protobuf.FloatValue", "f32"),
    (".google.protobuf.Int32Value", "i32"),
    (".google.protobuf.Int64Value", "i64"),
    (".google.protobuf.StringValue", "::std::string::String"),
    (".google.protobuf.UInt32Value", "u32"),
    (".google.protobuf.UInt64Value", "u64"),
];

impl Builder {
    /// Where to write the generated files (default `OUT_DIR`).
    pub fn out_dir(mut self, dir: impl AsRef<Path>) -> Self {
        self.out_dir = Some(dir.as_ref().to_owned());
        self
    }

    /// Generate server code: `<Service>Tonic` and `<Service>Server` (default on).
    pub fn build_server(mut self, enable: bool) -> Self {
        self.build_server = enable;
        self
    }

    /// Generate client code: `<Service>Client` (default on).
    pub fn build_client(mut self, enable: bool) -> Self {
        self.build_client = enable;
        self
    }

    /// Also emit tonic-build's own stubs, `<service>_client` and `<service>_server` (default off),
    /// for a plain tonic client or server of the same protos beside duet's. They follow
    /// [`build_client`](Self::build_client) and [`build_server`](Self::build_server), and they name the
    /// `tonic` crate: add `tonic` (the version duet uses) to your dependencies when you turn them on.
    pub fn tonic_stubs(mut self, enable: bool) -> Self {
        self.tonic_stubs = enable;
        self
    }

    /// Print `cargo:rerun-if-changed` for every proto file read from disk (default on).
    pub fn emit_rerun_if_changed(mut self, enable: bool) -> Self {
        self.emit_rerun_if_changed = enable;
        self
    }

    /// Also write the encoded `FileDescriptorSet` to `path` (for gRPC reflection, say).
    pub fn file_descriptor_set_path(mut self, path: impl AsRef<Path>) -> Self {
        self.file_descriptor_set_path = Some(path.as_ref().to_owned());
        self
    }

    /// Adds an attribute to messages and enums matching `path` (prost's matching rules).
    pub fn type_attribute(mut self, path: impl AsRef<str>, attribute: impl AsRef<str>) -> Self {
        self.type_attributes.push((path.as_ref().to_owned(), attribute.as_ref().to_owned()));
        self
    }

    /// Adds an attribute to messages matching `path`.
    pub fn message_attribute(mut self, path: impl AsRef<str>, attribute: impl AsRef<str>) -> Self {
        self.message_attributes.push((path.as_ref().to_owned(), attribute.as_ref().to_owned()));
        self
    }

    /// Adds an attribute to enums matching `path`.
    pub fn enum_attribute(mut self, path: impl AsRef<str>, attribute: impl AsRef<str>) -> Self {
        self.enum_attributes.push((path.as_ref().to_owned(), attribute.as_ref().to_owned()));
        self
    }

    /// Adds an attribute to fields matching `path`.
    ///
    /// Every `bytes` field gets `#[serde(with = "::duet::bytes_field", default)]` so that large
    /// values travel uncopied on the Iroh wire (see `duet::bytes_field`); a field this reaches with
    /// its own serde `with`, `serialize_with` or `deserialize_with` keeps yours instead.
    pub fn field_attribute(mut self, path: impl AsRef<str>, attribute: impl AsRef<str>) -> Self {
        self.field_attributes.push((path.as_ref().to_owned(), attribute.as_ref().to_owned()));
        self
    }

    /// Uses an existing Rust type for a proto path instead of generating it. The type must implement
    /// `duet::Message` (prost + serde).
    pub fn extern_path(mut self, proto_path: impl AsRef<str>, rust_path: impl AsRef<str>) -> Self {
        self.extern_paths.push((proto_path.as_ref().to_owned(), rust_path.as_ref().to_owned()));
        self
    }

    /// Generates Iroh stubs only for these services (full `pkg.Service` or short `Service` names);
    /// the others are served and called over gRPC only. By default every service gets them.
    pub fn iroh_services<I, S>(mut self, services: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.iroh_services = Some(services.into_iter().map(Into::into).collect());
        self
    }

    /// Chooses the body codec of one service on the Iroh wire (default [`Codec::Postcard`]).
    pub fn iroh_codec(mut self, service: impl Into<String>, codec: Codec) -> Self {
        self.codecs.insert(service.into(), codec);
        self
    }

    /// Sets the config name of a service (default: snake_case of its proto name).
    pub fn config_name(mut self, service: impl Into<String>, name: impl Into<String>) -> Self {
        self.config_names.insert(service.into(), name.into());
        self
    }

    /// Compiles every `.proto` file directly in `dir` (not its subfolders), with `dir` and
    /// `includes` as include paths.
    pub fn compile_dir(self, dir: impl AsRef<Path>, includes: &[impl AsRef<Path>]) -> Result<(), Error> {
        let dir = dir.as_ref();
        let io = |source| Error::Io { context: format!("reading proto directory {}", dir.display()), source };
        let mut protos = vec![];
        for entry in std::fs::read_dir(dir).map_err(io)? {
            let path = entry.map_err(io)?.path();
            if path.extension().is_some_and(|e| e == "proto") {
                protos.push(path);
            }
        }
        protos.sort();
        if protos.is_empty() {
            return Err(Error::Config(format!("no .proto files in {}", dir.display())));
        }
        let mut all_includes: Vec<PathBuf> = vec![dir.to_owned()];
        all_includes.extend(includes.iter().map(|p| p.as_ref().to_owned()));
        self.compile(&protos, &all_includes)
    }

    /// Parses `protos` (searching `includes` for them and their imports) and writes the generated code.
    ///
    /// A proto that does not parse or resolve is an [`Error::Proto`] naming the file and line.
    pub fn compile(self, protos: &[impl AsRef<Path>], includes: &[impl AsRef<Path>]) -> Result<(), Error> {
        let out_dir = match &self.out_dir {
            Some(d) => d.clone(),
            None => PathBuf::from(std::env::var_os("OUT_DIR").ok_or_else(|| {
                Error::Config("OUT_DIR is not set: call duet-codegen from build.rs, or set .out_dir(..)".into())
            })?),
        };
        let mut compiler = protox::Compiler::new(includes.iter().map(AsRef::as_ref)).map_err(proto_error)?;
        compiler.include_imports(true).include_source_info(true);
        compiler.open_files(protos.iter().map(AsRef::as_ref)).map_err(proto_error)?;
        if self.emit_rerun_if_changed {
            for line in rerun_lines(&compiler) {
                println!("{line}");
            }
        }
        let mut fds = compiler.file_descriptor_set();
        if let Some(path) = &self.file_descriptor_set_path {
            use prost::Message as _;
            std::fs::write(path, fds.encode_to_vec())
                .map_err(|source| Error::Io { context: format!("writing {}", path.display()), source })?;
        }
        docs::sanitize_set(&mut fds);

        let fingerprints = fingerprints(&fds);
        let bytes_fields = bytes_fields::fields(&fds);
        self.check_service_names(&fds)?;

        let tonic = self.tonic_stubs.then(|| {
            tonic_prost_build::configure()
                .build_server(self.build_server)
                .build_client(self.build_client)
                .codec_path("::duet::__codegen::tonic_prost::ProstCodec")
                .emit_rerun_if_changed(false)
                .service_generator()
        });
        let problems = Rc::new(RefCell::new(vec![]));
        let generator = DuetGenerator {
            tonic,
            problems: problems.clone(),
            taken: rust_names(&fds),
            build_server: self.build_server,
            build_client: self.build_client,
            iroh_only: self.iroh_services.clone(),
            codecs: self.codecs.clone(),
            config_names: self.config_names.clone(),
            fingerprints,
        };

        let mut config = prost_build::Config::new();
        config
            .out_dir(&out_dir)
            .prost_path("::duet::__codegen::prost")
            .compile_well_known_types()
            .bytes(["."])
            .include_file(INCLUDE_FILE)
            .type_attribute(
                ".",
                "#[derive(::duet::__codegen::serde::Serialize, ::duet::__codegen::serde::Deserialize)]\n\
                 #[serde(crate = \"::duet::__codegen::serde\")]",
            )
            .service_generator(Box::new(generator));
        for (proto, rust) in WELL_KNOWN_EXTERNS {
            config.extern_path(proto, rust);
        }
        config.extern_path(".google.protobuf", "::duet::well_known");
        for (p, a) in &self.type_attributes {
            config.type_attribute(p, a);
        }
        for (p, a) in &self.message_attributes {
            config.message_attribute(p, a);
        }
        for (p, a) in &self.enum_attributes {
            config.enum_attribute(p, a);
        }
        // A field the caller gave its own serde `with` keeps it: two would not compile.
        for field in bytes_fields {
            let own = self
                .field_attributes
                .iter()
                .any(|(p, a)| bytes_fields::reaches(p, &field.path) && bytes_fields::sets_serde_with(a));
            if !own {
                config.field_attribute(&field.path, field.attribute());
            }
        }
        for (p, a) in &self.field_attributes {
            config.field_attribute(p, a);
        }
        for (p, r) in &self.extern_paths {
            config.extern_path(p, r);
        }
        config.compile_fds(fds).map_err(|source| Error::Io { context: "generating Rust code".into(), source })?;
        match problems.take().as_slice() {
            [] => Ok(()),
            found => Err(Error::Config(format!("duet-codegen: {}", found.join("; ")))),
        }
    }

    fn check_service_names(&self, fds: &prost_types::FileDescriptorSet) -> Result<(), Error> {
        let known: Vec<(String, String)> = fds
            .file
            .iter()
            .flat_map(|f| f.service.iter().map(move |s| (fq_name(f.package(), s.name()), s.name().to_owned())))
            .collect();
        let named = self.iroh_services.iter().flatten().chain(self.codecs.keys()).chain(self.config_names.keys());
        for name in named {
            if !known.iter().any(|(fq, short)| fq == name || short == name) {
                let list: Vec<_> = known.iter().map(|(fq, _)| fq.as_str()).collect();
                return Err(Error::Config(format!(
                    "duet-codegen: no service named {name:?} in the protos (services: {})",
                    list.join(", ")
                )));
            }
        }
        Ok(())
    }
}

/// A service's fully qualified proto name, `pkg.Service` (just `Service` without a package).
pub(crate) fn fq_name(package: &str, service: &str) -> String {
    if package.is_empty() { service.to_owned() } else { format!("{package}.{service}") }
}

/// A `cargo:rerun-if-changed` line per proto read from disk (protox's bundled well-known types have
/// no path and need none).
fn rerun_lines(compiler: &protox::Compiler) -> Vec<String> {
    compiler.files().filter_map(|f| f.path()).map(|p| format!("cargo:rerun-if-changed={}", p.display())).collect()
}

fn proto_error(e: protox::Error) -> Error {
    Error::Proto(render(&e))
}

/// protox's message, prefixed with the file and line it points at, as `file.proto:LINE: message`.
fn render(e: &protox::Error) -> String {
    use miette::Diagnostic;
    let msg = e.to_string();
    let span = e.labels().and_then(|mut labels| labels.next()).map(|l| *l.inner());
    let line = span
        .zip(e.source_code())
        .and_then(|(span, src)| src.read_span(&span, 0, 0).ok())
        .map(|contents| contents.line() + 1);
    match (e.file(), line) {
        (Some(file), Some(line)) if !msg.starts_with(file) => format!("{file}:{line}: {msg}"),
        (Some(file), None) if !msg.contains(file) => format!("{file}: {msg}"),
        _ => msg,
    }
}

/// Per package, the names prost gives its top-level items in Rust, and what proto item each is: a
/// struct or enum per message and enum, and a module per message with nested types or oneofs.
fn rust_names(fds: &prost_types::FileDescriptorSet) -> HashMap<String, HashMap<String, String>> {
    use heck::{ToSnakeCase, ToUpperCamelCase};
    let mut out: HashMap<String, HashMap<String, String>> = HashMap::new();
    for file in &fds.file {
        let names = out.entry(file.package().to_owned()).or_default();
        let fq = |name: &str| fq_name(file.package(), name);
        for m in &file.message_type {
            names.insert(m.name().to_upper_camel_case(), format!("message {}", fq(m.name())));
            // prost writes no type for a map's entry, nor a oneof for a proto3 `optional` field.
            let nested = m.nested_type.iter().any(|n| !n.options.as_ref().is_some_and(|o| o.map_entry()));
            let synthetic = |i: usize| m.field.iter().any(|f| f.proto3_optional() && f.oneof_index == Some(i as i32));
            let oneofs = (0..m.oneof_decl.len()).any(|i| !synthetic(i));
            if nested || !m.enum_type.is_empty() || oneofs {
                names.insert(m.name().to_snake_case(), format!("the module of message {}", fq(m.name())));
            }
        }
        for e in &file.enum_type {
            names.insert(e.name().to_upper_camel_case(), format!("enum {}", fq(e.name())));
        }
    }
    out
}

fn fingerprints(fds: &prost_types::FileDescriptorSet) -> HashMap<(String, String), u64> {
    let schemas = Schemas::new(fds);
    let mut out = HashMap::new();
    for file in &fds.file {
        for svc in &file.service {
            for m in &svc.method {
                let key = (m.input_type().to_owned(), m.output_type().to_owned());
                let fp = schemas.fingerprint(&key.0, &key.1);
                out.insert(key, fp);
            }
        }
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    /// A compiler that has read `files` (name, text) from a scratch directory, the first one opened.
    pub(crate) fn compiler(files: &[(&str, &str)]) -> protox::Compiler {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        let mut compiler = protox::Compiler::new([dir.path()]).unwrap();
        compiler.include_imports(true);
        compiler.open_files([files[0].0]).unwrap();
        compiler
    }

    #[test]
    fn rerun_lines_name_every_proto_read_from_disk_and_no_bundled_one() {
        let compiler = compiler(&[
            ("a.proto", "syntax = \"proto3\";\nimport \"b.proto\";\nimport \"google/protobuf/empty.proto\";\n"),
            ("b.proto", "syntax = \"proto3\";\n"),
        ]);
        let lines = super::rerun_lines(&compiler);
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(lines.iter().any(|l| l.ends_with("a.proto")) && lines.iter().any(|l| l.ends_with("b.proto")));
        assert!(lines.iter().all(|l| l.starts_with("cargo:rerun-if-changed=")));
    }
}
