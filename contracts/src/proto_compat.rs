//! Wire compatibility of the internal gRPC APIs, as `buf breaking` checks it: the `.proto` files
//! compiled now against the descriptor set of the last release (`proto/releases/`). A field
//! keeps its number, type, label and name; a removed field's number (and name) is reserved, never
//! reused; messages, enums, services and methods are never removed, and a method keeps its
//! request and response types.

use std::collections::BTreeMap;

use prost::Message as _;
use prost_types::{DescriptorProto, EnumDescriptorProto, FileDescriptorSet, ServiceDescriptorProto};

/// The descriptor set of the last release, as committed.
pub const LAST_RELEASE: &str = "proto/releases/0.1.0.binpb";

/// Every message and enum of a set by its full name (`.package.Outer.Inner`).
#[derive(Default)]
struct Index<'a> {
    messages: BTreeMap<String, &'a DescriptorProto>,
    enums: BTreeMap<String, &'a EnumDescriptorProto>,
    services: BTreeMap<String, &'a ServiceDescriptorProto>,
}

fn index(set: &FileDescriptorSet) -> Index<'_> {
    fn walk<'a>(prefix: &str, message: &'a DescriptorProto, index: &mut Index<'a>) {
        let name = format!("{prefix}.{}", message.name());
        for nested in &message.nested_type {
            walk(&name, nested, index);
        }
        for e in &message.enum_type {
            index.enums.insert(format!("{name}.{}", e.name()), e);
        }
        index.messages.insert(name, message);
    }
    let mut index = Index::default();
    for file in &set.file {
        let prefix = if file.package().is_empty() {
            String::new()
        } else {
            format!(".{}", file.package())
        };
        for message in &file.message_type {
            walk(&prefix, message, &mut index);
        }
        for e in &file.enum_type {
            index.enums.insert(format!("{prefix}.{}", e.name()), e);
        }
        for service in &file.service {
            index
                .services
                .insert(format!("{prefix}.{}", service.name()), service);
        }
    }
    index
}

fn reserved_number(message: &DescriptorProto, number: i32) -> bool {
    // Reserved ranges are half-open: `end` is exclusive.
    message
        .reserved_range
        .iter()
        .any(|r| (r.start()..r.end()).contains(&number))
}

/// Every way `new` breaks a peer built against `old`, one line each naming the element.
#[must_use]
pub fn breaking_changes(old: &FileDescriptorSet, new: &FileDescriptorSet) -> Vec<String> {
    let (old, new) = (index(old), index(new));
    let mut found = Vec::new();
    for (name, before) in &old.messages {
        let Some(after) = new.messages.get(name) else {
            found.push(format!("message {name} was removed"));
            continue;
        };
        for field in &before.field {
            let number = field.number();
            match after.field.iter().find(|f| f.number() == number) {
                None if !reserved_number(after, number) => found.push(format!(
                    "field {name}.{} ({number}) was removed without reserving its number",
                    field.name()
                )),
                None => {}
                Some(now) => {
                    if now.r#type() != field.r#type() || now.type_name() != field.type_name() {
                        found.push(format!(
                            "field {name}.{} ({number}) changed type from {:?} {} to {:?} {}",
                            field.name(),
                            field.r#type(),
                            field.type_name(),
                            now.r#type(),
                            now.type_name()
                        ));
                    }
                    if now.label() != field.label() {
                        found.push(format!(
                            "field {name}.{} ({number}) changed label from {:?} to {:?}",
                            field.name(),
                            field.label(),
                            now.label()
                        ));
                    }
                    if now.name() != field.name() {
                        found.push(format!(
                            "field {name}.{} ({number}) was renamed to {}",
                            field.name(),
                            now.name()
                        ));
                    }
                    if now.proto3_optional() != field.proto3_optional() {
                        found.push(format!(
                            "field {name}.{} ({number}) changed presence (optional)",
                            field.name()
                        ));
                    }
                }
            }
        }
        for field in &after.field {
            if reserved_number(before, field.number()) {
                found.push(format!(
                    "field {name}.{} reuses the reserved number {}",
                    field.name(),
                    field.number()
                ));
            }
        }
    }
    for (name, before) in &old.enums {
        let Some(after) = new.enums.get(name) else {
            found.push(format!("enum {name} was removed"));
            continue;
        };
        for value in &before.value {
            if !after.value.iter().any(|v| v.number() == value.number()) {
                found.push(format!(
                    "enum value {name}.{} ({}) was removed",
                    value.name(),
                    value.number()
                ));
            }
        }
    }
    for (name, before) in &old.services {
        let Some(after) = new.services.get(name) else {
            found.push(format!("service {name} was removed"));
            continue;
        };
        for method in &before.method {
            match after.method.iter().find(|m| m.name() == method.name()) {
                None => found.push(format!("method {name}/{} was removed", method.name())),
                Some(now) => {
                    if now.input_type() != method.input_type() || now.output_type() != method.output_type() {
                        found.push(format!(
                            "method {name}/{} changed its types from ({}) -> {} to ({}) -> {}",
                            method.name(),
                            method.input_type(),
                            method.output_type(),
                            now.input_type(),
                            now.output_type()
                        ));
                    }
                    if now.client_streaming() != method.client_streaming()
                        || now.server_streaming() != method.server_streaming()
                    {
                        found.push(format!("method {name}/{} changed streaming", method.name()));
                    }
                }
            }
        }
    }
    found
}

/// The `.proto` files as they are now.
///
/// # Panics
/// They do not compile (the build would have failed first).
#[must_use]
pub fn current() -> FileDescriptorSet {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/proto");
    protox::compile(["inventory.proto", "customers.proto"], [root]).expect("the protos compile")
}

/// The committed descriptor set of the last release.
///
/// # Panics
/// It is missing or not a descriptor set.
#[must_use]
pub fn last_release() -> FileDescriptorSet {
    let path = format!("{}/{LAST_RELEASE}", env!("CARGO_MANIFEST_DIR"));
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    FileDescriptorSet::decode(bytes.as_slice()).expect("a FileDescriptorSet")
}

#[cfg(test)]
mod tests {
    use prost_types::field_descriptor_proto::Type;
    use prost_types::{DescriptorProto, FileDescriptorSet};

    use super::*;

    fn message<'a>(set: &'a mut FileDescriptorSet, name: &str) -> &'a mut DescriptorProto {
        set.file
            .iter_mut()
            .flat_map(|f| f.message_type.iter_mut())
            .find(|m| m.name() == name)
            .unwrap()
    }

    #[test]
    fn the_protos_stay_wire_compatible_with_the_last_release() {
        if let Ok(path) = std::env::var("MERCATO_WRITE_PROTO_RELEASE") {
            // Cutting a release: record what it ships.
            std::fs::write(&path, current().encode_to_vec()).unwrap();
        }
        let breaks = breaking_changes(&last_release(), &current());
        assert!(
            breaks.is_empty(),
            "the .proto files break peers of the last release ({LAST_RELEASE}):\n{}",
            breaks.join("\n")
        );
    }

    #[test]
    fn a_changed_type_a_removed_field_and_a_reused_number_are_named() {
        let old = current();
        let mut new = old.clone();
        let product = message(&mut new, "Product");
        let available = product
            .field
            .iter_mut()
            .find(|f| f.name() == "available")
            .unwrap();
        available.set_type(Type::String);
        product.field.retain(|f| f.name() != "name");
        let breaks = breaking_changes(&old, &new);
        crate::assert_found(&breaks, |b| {
            b.contains("mercato.inventory.v1.Product.available (4) changed type")
        });
        crate::assert_found(&breaks, |b| {
            b.contains("Product.name (2) was removed without reserving")
        });

        // Reserving the number makes the removal compatible; reusing it later does not.
        let mut reserved = new.clone();
        message(&mut reserved, "Product")
            .reserved_range
            .push(prost_types::descriptor_proto::ReservedRange {
                start: Some(2),
                end: Some(3),
            });
        let mut reused = reserved.clone();
        let mut field = message(&mut reused, "Product").field[0].clone();
        field.name = Some("title".into());
        field.number = Some(2);
        message(&mut reused, "Product").field.push(field);
        let breaks = breaking_changes(&reserved, &reused);
        crate::assert_found(&breaks, |b| {
            b.contains("Product.title reuses the reserved number 2")
        });
    }

    #[test]
    fn a_renamed_field_or_a_removed_method_is_named_and_an_added_field_is_not() {
        let old = current();
        let mut new = old.clone();
        let customer = message(&mut new, "Customer");
        customer
            .field
            .iter_mut()
            .find(|f| f.name() == "email")
            .unwrap()
            .name = Some("mail".into());
        let mut added = customer.field[0].clone();
        added.name = Some("nickname".into());
        added.number = Some(99);
        customer.field.push(added);
        let service = new
            .file
            .iter_mut()
            .flat_map(|f| f.service.iter_mut())
            .next()
            .unwrap();
        let method = service.method.remove(0);
        let breaks = breaking_changes(&old, &new);
        crate::assert_found(&breaks, |b| b.contains("Customer.email (2) was renamed to mail"));
        crate::assert_found(&breaks, |b| {
            b.contains(&format!("/{} was removed", method.name()))
        });
        assert!(!breaks.iter().any(|b| b.contains("nickname")), "{breaks:?}");
    }
}
