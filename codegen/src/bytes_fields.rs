//! The `bytes` fields marked to decode as slices of the received frame (`duet::bytes_field`).

use prost_types::field_descriptor_proto::Type;
use prost_types::{DescriptorProto, FileDescriptorSet};

/// The attribute a `bytes` field gets; the wire bytes stay serde's own. `default` keeps a field
/// missing from a self-describing input (JSON) what it was without the attribute for an `Option`,
/// and the proto default for the others.
pub(crate) const ATTRIBUTE: &str = "#[serde(with = \"::duet::bytes_field\", default)]";

/// The same for a oneof member, an enum variant, where serde has no `default`.
pub(crate) const VARIANT_ATTRIBUTE: &str = "#[serde(with = \"::duet::bytes_field\")]";

/// A `bytes` field of a generated message, by prost-build's path: `.pkg.Msg.field`, or
/// `.pkg.Msg.oneof.field` for a member of a oneof (prost's enum variant).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct BytesField {
    pub path: String,
    pub in_oneof: bool,
}

impl BytesField {
    pub fn attribute(&self) -> &'static str {
        if self.in_oneof { VARIANT_ATTRIBUTE } else { ATTRIBUTE }
    }
}

/// Whether a caller's `field_attribute(path, ..)` reaches `field`, by prost-build's rules: the
/// same path, a suffix of it without the leading dot (`Msg.field`, `field`), a package or message
/// prefix (`.pkg`, `.pkg.Msg`), or `.` for everything.
pub(crate) fn reaches(path: &str, field: &str) -> bool {
    if path == "." || path == field {
        return true;
    }
    match path.strip_prefix('.') {
        Some(_) => field.strip_prefix(path).is_some_and(|rest| rest.starts_with('.')),
        None => field.strip_suffix(path).is_some_and(|rest| rest.ends_with('.')),
    }
}

/// Whether an attribute gives a field its own serde (de)serializer, which would clash with duet's.
pub(crate) fn sets_serde_with(attribute: &str) -> bool {
    attribute.contains("serde") && attribute.contains("with")
}

/// Every `bytes` field of the messages prost-build will generate from `fds`.
pub(crate) fn fields(fds: &FileDescriptorSet) -> Vec<BytesField> {
    let mut out = Vec::new();
    // The well-known types are not generated: they come from `duet::well_known`. A file without a
    // package has paths starting `.Msg`.
    for file in fds.file.iter().filter(|f| f.package() != "google.protobuf") {
        let package = if file.package().is_empty() { String::new() } else { format!(".{}", file.package()) };
        for msg in &file.message_type {
            visit(&package, msg, &mut out);
        }
    }
    out
}

fn visit(parent: &str, msg: &DescriptorProto, out: &mut Vec<BytesField>) {
    // A map's entry type is not generated: prost makes the map a `HashMap` of the value type.
    if msg.options.as_ref().is_some_and(|o| o.map_entry()) {
        return;
    }
    let name = format!("{parent}.{}", msg.name());
    for field in msg.field.iter().filter(|f| f.r#type() == Type::Bytes) {
        let oneof = field.oneof_index.filter(|_| !field.proto3_optional()).and_then(|i| msg.oneof_decl.get(i as usize));
        out.push(match oneof {
            Some(oneof) => BytesField { path: format!("{name}.{}.{}", oneof.name(), field.name()), in_oneof: true },
            None => BytesField { path: format!("{name}.{}", field.name()), in_oneof: false },
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
        let proto = r#"syntax = "proto3";
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
"#;
        let compiler = crate::tests::compiler(&[("a.proto", proto)]);
        let mut fields = super::fields(&compiler.file_descriptor_set());
        fields.sort();
        let found: Vec<_> = fields.iter().map(|f| (f.path.as_str(), f.in_oneof)).collect();
        assert_eq!(
            found,
            [
                (".p.v1.M.Inner.deep", false),
                (".p.v1.M.kind.blob", true),
                (".p.v1.M.many", false),
                (".p.v1.M.maybe", false),
                (".p.v1.M.plain", false)
            ]
        );
    }

    #[test]
    fn a_file_without_a_package_has_paths_from_the_root() {
        let compiler = crate::tests::compiler(&[("a.proto", "syntax = \"proto3\";\nmessage M { bytes b = 1; }\n")]);
        let fields = super::fields(&compiler.file_descriptor_set());
        assert_eq!(fields.iter().map(|f| f.path.as_str()).collect::<Vec<_>>(), [".M.b"]);
    }

    #[test]
    fn a_callers_attribute_path_reaches_fields_as_prost_builds_paths_do() {
        use super::reaches;
        let field = ".p.v1.M.data";
        for path in [".", ".p.v1.M.data", "p.v1.M.data", "M.data", "data", ".p.v1.M", ".p", ".p.v1"] {
            assert!(reaches(path, field), "{path}");
        }
        for path in [".p.v1.M.dat", "ata", ".p.v1.Ma", ".q", "M", ".p.v1.M.data.x", "v1.M"] {
            assert!(!reaches(path, field), "{path}");
        }
        assert!(super::sets_serde_with("#[serde(serialize_with = \"f\")]"));
        assert!(!super::sets_serde_with("#[serde(default)]"));
    }
}
