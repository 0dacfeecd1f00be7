//! Schema fingerprints: postcard has no field tags, so two builds of a proto that differ cannot read
//! each other's bytes. Each method carries a hash of the structure of its request and response types;
//! the Iroh server refuses a call whose fingerprint differs from its own.

use std::collections::HashMap;
use std::fmt::Write;

use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, FileDescriptorSet};

/// Every message of a descriptor set, by fully qualified name (`.pkg.Outer.Inner`).
pub(crate) struct Schemas<'a> {
    messages: HashMap<String, &'a DescriptorProto>,
}

impl<'a> Schemas<'a> {
    pub fn new(fds: &'a FileDescriptorSet) -> Self {
        let mut messages = HashMap::new();
        for file in &fds.file {
            let prefix = match file.package() {
                "" => String::new(),
                p => format!(".{p}"),
            };
            for m in &file.message_type {
                index(&prefix, m, &mut messages);
            }
        }
        Self { messages }
    }

    /// The fingerprint of a method with these (fully qualified) request and response types.
    pub fn fingerprint(&self, input: &str, output: &str) -> u64 {
        let mut canon = String::from("duet/1 postcard;");
        self.describe(input, &mut vec![], &mut canon);
        canon.push(';');
        self.describe(output, &mut vec![], &mut canon);
        fnv1a(canon.as_bytes())
    }

    /// Writes the wire-relevant structure of a type: field order, scalar types, labels, oneof grouping
    /// and nested structure, but no names (a rename does not change postcard bytes).
    fn describe(&self, name: &str, stack: &mut Vec<String>, out: &mut String) {
        if let Some(depth) = stack.iter().position(|n| n == name) {
            // A recursive reference: name the ancestor by its depth so cycles still hash stably.
            let _ = write!(out, "^{depth}");
            return;
        }
        let Some(msg) = self.messages.get(name) else {
            // Not a message (an enum travels as i32) or outside the set.
            let _ = write!(out, "?{name}");
            return;
        };
        stack.push(name.to_owned());
        out.push('{');
        for f in &msg.field {
            let label = match f.label() {
                Label::Repeated => "r",
                Label::Required => "q",
                Label::Optional if f.proto3_optional() => "o",
                Label::Optional => "",
            };
            let _ = write!(out, "{label}{}", f.r#type() as i32);
            if let Some(oneof) = f.oneof_index
                && !f.proto3_optional()
            {
                let _ = write!(out, "|{oneof}");
            }
            match f.r#type() {
                Type::Message | Type::Group => self.describe(f.type_name(), stack, out),
                Type::Enum => out.push('e'),
                _ => {}
            }
            out.push(',');
        }
        out.push('}');
        stack.pop();
    }
}

fn index<'a>(prefix: &str, msg: &'a DescriptorProto, out: &mut HashMap<String, &'a DescriptorProto>) {
    let name = format!("{prefix}.{}", msg.name());
    for nested in &msg.nested_type {
        index(&name, nested, out);
    }
    out.insert(name, msg);
}

/// FNV-1a, 64 bit: stable across Rust versions and platforms, which `DefaultHasher` is not.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fds(src: &str) -> FileDescriptorSet {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("t.proto"), src).unwrap();
        protox::compile(["t.proto"], [dir.path()]).unwrap()
    }

    fn fp(src: &str) -> u64 {
        let set = fds(src);
        Schemas::new(&set).fingerprint(".t.A", ".t.B")
    }

    #[test]
    fn renames_keep_and_structure_changes_flip_the_fingerprint() {
        let base = fp("syntax = \"proto3\"; package t; message A { int32 x = 1; } message B { repeated A a = 1; }");
        let renamed = fp("syntax = \"proto3\"; package t; message A { int32 y = 1; } message B { repeated A c = 1; }");
        let retyped = fp("syntax = \"proto3\"; package t; message A { int64 x = 1; } message B { repeated A a = 1; }");
        let added = fp(
            "syntax = \"proto3\"; package t; message A { int32 x = 1; string s = 2; } message B { repeated A a = 1; }",
        );
        assert_eq!(base, renamed);
        assert_ne!(base, retyped);
        assert_ne!(base, added);
    }

    #[test]
    fn recursive_messages_hash() {
        let a = fp("syntax = \"proto3\"; package t; message A { A next = 1; } message B { A a = 1; }");
        let b = fp("syntax = \"proto3\"; package t; message A { A next = 1; int32 v = 2; } message B { A a = 1; }");
        assert_ne!(a, b);
    }
}
