//! The `bytes` fields marked to decode as slices of the received frame (`duet::bytes_field`).

use prost_types::field_descriptor_proto::Type;
use prost_types::{DescriptorProto, FileDescriptorSet};

/// The attribute each `bytes` field gets; the wire bytes stay serde's own.
pub(crate) const ATTRIBUTE: &str = "#[serde(with = \"::duet::bytes_field\")]";

/// prost-build's path of every `bytes` field of a generated message: `.pkg.Msg.field`, or
/// `.pkg.Msg.oneof.field` for a member of a oneof (prost's enum variant).
pub(crate) fn paths(fds: &FileDescriptorSet) -> Vec<String> {
    let mut out = Vec::new();
    // The well-known types are not generated: they come from `duet::well_known`.
    for file in fds.file.iter().filter(|f| f.package() != "google.protobuf") {
        let package = if file.package().is_empty() { String::new() } else { format!(".{}", file.package()) };
        for msg in &file.message_type {
            visit(&package, msg, &mut out);
        }
    }
    out
}

fn visit(parent: &str, msg: &DescriptorProto, out: &mut Vec<String>) {
    // A map's entry type is not generated: prost makes the map a `HashMap` of the value type.
    if msg.options.as_ref().is_some_and(|o| o.map_entry()) {
        return;
    }
    let name = format!("{parent}.{}", msg.name());
    for field in msg.field.iter().filter(|f| f.r#type() == Type::Bytes) {
        let oneof = field.oneof_index.filter(|_| !field.proto3_optional()).and_then(|i| msg.oneof_decl.get(i as usize));
        out.push(match oneof {
            Some(oneof) => format!("{name}.{}.{}", oneof.name(), field.name()),
            None => format!("{name}.{}", field.name()),
        });
    }
    for nested in &msg.nested_type {
        visit(&name, nested, out);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_shape_of_bytes_field_is_found_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("a.proto"),
            r#"syntax = "proto3";
package p.v1;
message M {
  bytes plain = 1;
  optional bytes maybe = 2;
  repeated bytes many = 3;
  oneof kind { bytes blob = 4; string text = 5; }
  map<string, bytes> by_name = 6;
  string other = 7;
  message Inner { bytes deep = 1; }
}
"#,
        )
        .unwrap();
        let mut compiler = protox::Compiler::new([dir.path()]).unwrap();
        compiler.include_imports(true);
        compiler.open_files(["a.proto"]).unwrap();
        let mut paths = super::paths(&compiler.file_descriptor_set());
        paths.sort();
        assert_eq!(
            paths,
            [".p.v1.M.Inner.deep", ".p.v1.M.kind.blob", ".p.v1.M.many", ".p.v1.M.maybe", ".p.v1.M.plain"]
        );
    }
}
