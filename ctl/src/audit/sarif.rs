//! SARIF 2.1.0 output for CI systems: one rule per check of the catalog,
//! one result per finding that is not a PASS (SARIF readers show every
//! result; passes would bury the rest). WARN is `kind: fail, level:
//! warning`, INFO `review/note`, NOTE `informational/none`.

use super::catalog::{self, CHECKS};
use super::model::{Finding, Level, Report};
use serde_json::{json, Value};

pub const SCHEMA: &str = "https://json.schemastore.org/sarif-2.1.0.json";

fn rules() -> Vec<Value> {
    CHECKS
        .iter()
        .map(|c| {
            json!({
                "id": c.id,
                "name": c.id,
                "shortDescription": {"text": c.title},
                "help": {"text": c.remediation},
                "defaultConfiguration": {"level": "warning"},
                "properties": {"cis": c.cis, "section": c.section.as_str(), "fixable": c.fixable},
            })
        })
        .collect()
}

fn result(f: &Finding) -> Value {
    let (kind, level) = match f.level {
        Level::Warn => ("fail", "warning"),
        Level::Info => ("review", "note"),
        Level::Note | Level::Pass => ("informational", "none"),
    };
    let locations: Vec<Value> = f
        .objects
        .iter()
        .map(|o| {
            json!({"logicalLocations": [{
                "name": o.name,
                "fullyQualifiedName": format!("{}/{}", serde_json::to_value(o.kind).unwrap_or_default().as_str().unwrap_or("object"), o.name),
                "kind": "resource",
            }]})
        })
        .collect();
    let key: Vec<String> = f.objects.iter().map(|o| format!("{:?}/{}", o.kind, o.name)).collect();
    json!({
        "ruleId": f.id,
        "ruleIndex": catalog::position(f.id),
        "kind": kind,
        "level": level,
        "message": {"text": format!("{}: {}", f.title, f.detail)},
        "locations": locations,
        // Stable across runs: the check and what it concerns (not the detail).
        "partialFingerprints": {"segAuditObject/v1": format!("{}|{}", f.id, key.join(","))},
    })
}

pub fn render(r: &Report) -> Value {
    let notifications: Vec<Value> = r
        .degraded
        .iter()
        .map(|d| {
            json!({
                "level": "note",
                "message": {"text": format!("{} ran without {}: {}", d.check, serde_json::to_value(d.needs).unwrap_or_default().as_str().unwrap_or("?"), d.reason)},
                "descriptor": {"id": d.check},
            })
        })
        .collect();
    json!({
        "$schema": SCHEMA,
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {
                "name": "segctl audit",
                "version": r.tool.version,
                "semanticVersion": r.tool.version,
                "rules": rules(),
            }},
            "invocations": [{
                "executionSuccessful": true,
                "toolExecutionNotifications": notifications,
            }],
            "results": r.findings.iter().filter(|f| f.level != Level::Pass).map(result).collect::<Vec<_>>(),
            "properties": {"score": r.summary.score, "counts": r.summary.counts},
        }],
    })
}
