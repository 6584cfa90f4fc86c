//! The API reference (docs/api-reference.md), rendered from the generated CRDs so that it says
//! exactly what the API server enforces: types, defaults, bounds, patterns and the CEL messages.
//! Written by hand because the usual generators (crd-ref-docs, gen-crd-api-reference-docs) read
//! Go types; ours are Rust, and the CRD schema is the one source both users and the server see.

use std::fmt::Write as _;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps, JSONSchemaPropsOrArray,
};

/// The Markdown reference of `crds`, one section per kind.
pub fn markdown(crds: &[CustomResourceDefinition]) -> String {
    let mut out = String::from(
        "# API reference: lifeboat.dev/v1alpha1\n\n\
         Generated from the CRDs (themselves generated from the Rust types in\n\
         `crates/lifeboat-api`) by `make crds`. Do not edit; a test fails when it drifts.\n\n\
         Every field lists its type, whether it is required, its default and the rules the API\n\
         server enforces at admission (bounds, patterns and CEL rules with their messages).\n\
         Durations are strings such as `90s`, `15m`, `1h30m`, `7d`.\n",
    );
    for crd in crds {
        let names = &crd.spec.names;
        let _ = write!(out, "\n## {}\n\n`kubectl get {}`", names.kind, names.plural);
        if let Some(short) = names.short_names.as_ref().filter(|s| !s.is_empty()) {
            let _ = write!(out, " (short: `{}`)", short.join("`, `"));
        }
        if let Some(cats) = names.categories.as_ref().filter(|c| !c.is_empty()) {
            let _ = write!(out, ", categories: `{}`", cats.join("`, `"));
        }
        out.push_str(". Namespaced.\n");
        for version in &crd.spec.versions {
            let Some(schema) = version
                .schema
                .as_ref()
                .and_then(|s| s.open_api_v3_schema.as_ref())
            else {
                continue;
            };
            if let Some(d) = &schema.description {
                let _ = writeln!(out, "\n{}", d.trim());
            }
            for rule in schema.x_kubernetes_validations.iter().flatten() {
                let _ = writeln!(
                    out,
                    "\nAdmission rule: {}",
                    rule.message.as_deref().unwrap_or(&rule.rule)
                );
            }
            if let Some(cols) = version
                .additional_printer_columns
                .as_ref()
                .filter(|c| !c.is_empty())
            {
                let cols: Vec<String> = cols.iter().map(|c| format!("`{}`", c.name)).collect();
                let _ = writeln!(out, "\n`kubectl get` columns: {}.", cols.join(", "));
            }
            for part in ["spec", "status"] {
                let Some(props) = schema.properties.as_ref().and_then(|p| p.get(part)) else {
                    continue;
                };
                let _ = writeln!(
                    out,
                    "\n### {} `.{part}`\n\n| Field | Type | Required | Default | Description |\n|---|---|---|---|---|",
                    names.kind
                );
                let mut rows = Vec::new();
                fields(props, part, &mut rows);
                for row in rows {
                    out.push_str(&row);
                }
            }
        }
    }
    out
}

/// One table row per field under `schema`, depth first, with dotted paths.
fn fields(schema: &JSONSchemaProps, path: &str, rows: &mut Vec<String>) {
    let required: Vec<&String> = schema.required.iter().flatten().collect();
    for (name, prop) in schema.properties.iter().flatten() {
        let here = format!("{path}.{name}");
        let (ty, inner) = type_of(prop);
        let default = prop
            .default
            .as_ref()
            .map(|d| format!("`{}`", d.0))
            .unwrap_or_default();
        rows.push(format!(
            "| `{here}` | {ty} | {} | {default} | {} |\n",
            if required.contains(&name) { "yes" } else { "" },
            describe(prop)
        ));
        if let Some(inner) = inner {
            let child = if prop.type_.as_deref() == Some("array") {
                format!("{here}[]")
            } else {
                here.clone()
            };
            fields(inner, &child, rows);
        }
    }
}

/// The field's type for people, and the object schema to descend into, if any.
fn type_of(prop: &JSONSchemaProps) -> (String, Option<&JSONSchemaProps>) {
    match prop.type_.as_deref() {
        Some("array") => match &prop.items {
            Some(JSONSchemaPropsOrArray::Schema(item)) => {
                let (inner, _) = type_of(item);
                let descend = item.properties.is_some().then_some(item.as_ref());
                (format!("[]{inner}"), descend)
            }
            _ => ("[]".into(), None),
        },
        Some("object") if prop.properties.is_some() => ("object".into(), Some(prop)),
        Some("object") => match &prop.additional_properties {
            Some(_) => ("map".into(), None),
            None => ("object".into(), None),
        },
        Some(t) => (t.to_owned(), None),
        None if prop.x_kubernetes_int_or_string == Some(true) => ("int or string".into(), None),
        None => ("any".into(), None),
    }
}

/// Description plus the constraints the server enforces, on one table line.
fn describe(prop: &JSONSchemaProps) -> String {
    let mut parts: Vec<String> = Vec::new();
    if let Some(d) = &prop.description {
        parts.push(d.split_whitespace().collect::<Vec<_>>().join(" "));
    }
    if let Some(values) = &prop.enum_ {
        let v: Vec<String> = values.iter().map(|v| format!("`{}`", v.0)).collect();
        parts.push(format!("One of {}.", v.join(", ")));
    }
    let bounds = |name: &str, min: Option<String>, max: Option<String>| match (min, max) {
        (Some(a), Some(b)) => Some(format!("{name} {a}–{b}.")),
        (Some(a), None) => Some(format!("{name} ≥ {a}.")),
        (None, Some(b)) => Some(format!("{name} ≤ {b}.")),
        (None, None) => None,
    };
    parts.extend(bounds(
        "Range",
        prop.minimum.map(|v| v.to_string()),
        prop.maximum.map(|v| v.to_string()),
    ));
    parts.extend(bounds(
        "Length",
        prop.min_length.map(|v| v.to_string()),
        prop.max_length.map(|v| v.to_string()),
    ));
    parts.extend(bounds(
        "Items",
        prop.min_items.map(|v| v.to_string()),
        prop.max_items.map(|v| v.to_string()),
    ));
    if let Some(p) = &prop.pattern {
        parts.push(format!("Pattern `{p}`."));
    }
    for rule in prop.x_kubernetes_validations.iter().flatten() {
        parts.push(format!(
            "Rule: {}.",
            rule.message
                .as_deref()
                .unwrap_or(&rule.rule)
                .trim_end_matches('.')
        ));
    }
    if let Some(items) = &prop.items
        && let JSONSchemaPropsOrArray::Schema(item) = items
    {
        for rule in item.x_kubernetes_validations.iter().flatten() {
            parts.push(format!(
                "Each item: {}.",
                rule.message
                    .as_deref()
                    .unwrap_or(&rule.rule)
                    .trim_end_matches('.')
            ));
        }
    }
    parts.join(" ").replace('|', "\\|")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spec_field_and_its_rules_are_in_the_reference() {
        let crds: Vec<_> = crate::crds().into_iter().map(|(_, c)| c).collect();
        let md = markdown(&crds);
        for needle in [
            "## BackupPolicy",
            "## RestoreRequest",
            "## DrillSchedule",
            "| `spec.schedule` | string | yes |",
            "| `spec.assets[].postgres.databases` | []string | yes |",
            "an asset needs exactly one of postgres, redis, objectStorage or kubernetesState",
            "| `spec.rollbackOnFailure` | boolean |  | `false` |",
            "| `status.rpoSeconds` |",
        ] {
            assert!(md.contains(needle), "missing {needle:?}");
        }
    }
}
