//! The report over a fixture host: JSON validates against the documented
//! schema, table and SARIF carry the same findings, no secret value leaks.

use super::catalog::{ids, CHECKS};
use super::container_checks::tests::{daemon, facts, hardened_json, with};
use super::facts::{Facts, SegFacts};
use super::model::*;
use super::{evaluate, sarif, table};
use serde_json::{json, Value};

const SECRET_VALUE: &str = "hunter2-do-not-print";

fn fixture_report() -> Report {
    let mut bad = with(json!({
        "Name": "/bad",
        "Id": "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210",
        "Config": {"User": "", "Env": [format!("DB_PASSWORD={SECRET_VALUE}")]},
        "HostConfig": {"Privileged": true, "Memory": 0},
    }));
    bad.setid = Err("storage driver btrfs is not read (only overlay2); check with `docker export`".into());
    let facts = Facts {
        daemon: daemon(),
        containers: vec![facts(hardened_json()), bad],
        seg: SegFacts { policy_dir: "/var/lib/seg/policies".into(), ..SegFacts::default() },
    };
    let all: Vec<&str> = CHECKS.iter().map(|c| c.id).collect();
    let (findings, degraded) = evaluate(&facts, &all, "/run/seg");
    let meta = ReportMeta {
        generated_at: 1_700_000_000,
        duration_ms: 12,
        host: HostInfo { hostname: Some("h".into()), containers: 2, ..HostInfo::default() },
        controller: ControllerInfo {
            reachable: Some(false),
            detail: "cannot reach the seg controller".into(),
        },
        filters: Filters::default(),
    };
    Report::new(findings, degraded, meta)
}

fn schema() -> Value {
    serde_json::from_str(include_str!("../../../docs/audit-schema.json")).expect("the schema is JSON")
}

#[test]
fn json_output_validates_against_the_documented_schema() {
    let report = serde_json::to_value(fixture_report()).unwrap();
    let validator = jsonschema::draft202012::new(&schema()).expect("a valid draft 2020-12 schema");
    let errors: Vec<String> =
        validator.iter_errors(&report).map(|e| format!("{} at {}", e, e.instance_path())).collect();
    assert!(errors.is_empty(), "{errors:#?}");
    // The schema is not vacuous: a wrong level, an unknown field and a bad id fail.
    for (pointer, bad) in [
        ("/findings/0/level", json!("FAIL")),
        ("/findings/0/extra", json!(1)),
        ("/findings/0/id", json!("5.5")),
    ] {
        let mut broken = report.clone();
        let (parent, key) = pointer.rsplit_once('/').unwrap();
        broken.pointer_mut(parent).unwrap().as_object_mut().unwrap().insert(key.to_owned(), bad);
        assert!(!validator.is_valid(&broken), "{pointer} should be refused");
    }
}

#[test]
fn findings_scores_and_failing() {
    let r = fixture_report();
    let warned: Vec<(&str, &str)> = r
        .findings
        .iter()
        .filter(|f| f.level == Level::Warn)
        .filter(|f| f.section != Section::Daemon)
        .map(|f| (f.id, f.objects[0].name.as_str()))
        .collect();
    assert_eq!(
        warned,
        [(ids::USER, "bad"), (ids::PRIVILEGED, "bad"), (ids::MEMORY, "bad"), (ids::SECRETS_ENV, "bad")]
    );
    let s = &r.summary;
    assert_eq!(s.counts.pass + s.counts.warn + s.counts.info + s.counts.note, r.findings.len());
    assert_eq!(s.sections.len(), 3);
    assert!(r.fails(FailOn::Warn) && r.fails(FailOn::Info) && !r.fails(FailOn::Never));
    let notes: Vec<&str> = r.degraded.iter().map(|d| d.check).collect();
    assert!(notes.contains(&ids::SETID) && notes.contains(&ids::EXPOSED_SECRETS), "{notes:?}");
    assert_eq!(Counts { pass: 2, warn: 1, ..Counts::default() }.score(), Some(67));
    assert_eq!(Counts::default().score(), None);
}

#[test]
fn no_format_prints_a_secret_value() {
    let r = fixture_report();
    let outputs = [
        serde_json::to_string(&r).unwrap(),
        table::render(&r),
        serde_json::to_string(&sarif::render(&r)).unwrap(),
    ];
    for out in outputs {
        assert!(!out.contains(SECRET_VALUE) && !out.contains("hunter2"), "a value leaked");
        assert!(out.contains("DB_PASSWORD"), "the variable name is reported");
    }
}

#[test]
fn table_groups_by_section_and_folds_passes() {
    let text = table::render(&fixture_report());
    let daemon_at = text.find("\nDAEMON — score").expect(&text);
    let containers_at = text.find("\nCONTAINERS — score").expect(&text);
    let seg_at = text.find("\nSEG — score").expect(&text);
    assert!(daemon_at < containers_at && containers_at < seg_at, "{text}");
    assert!(text.contains("  WARN cis-5.5-privileged           bad: privileged"), "{text}");
    assert!(text.contains("  PASS cis-5.5-privileged           hardened: not privileged"), "{text}");
    assert!(text.contains("fix: Remove `privileged: true`"), "{text}");
    assert!(text.contains("Checks that needed the controller: seg-secrets-reachable"), "{text}");
    assert!(text.contains("\nScore "), "{text}");
}

#[test]
fn sarif_is_2_1_0_with_rules_and_results() {
    let r = fixture_report();
    let s = sarif::render(&r);
    assert_eq!(s["version"], "2.1.0");
    assert_eq!(s["$schema"], sarif::SCHEMA);
    let run = &s["runs"][0];
    let rules = run["tool"]["driver"]["rules"].as_array().unwrap();
    assert_eq!(rules.len(), CHECKS.len());
    let results = run["results"].as_array().unwrap();
    assert_eq!(results.len(), r.findings.iter().filter(|f| f.level != Level::Pass).count());
    for res in results {
        let idx = res["ruleIndex"].as_u64().unwrap() as usize;
        assert_eq!(rules[idx]["id"], res["ruleId"], "ruleIndex points at its rule");
        assert!(["warning", "note", "none"].contains(&res["level"].as_str().unwrap()));
        assert!(["fail", "review", "informational"].contains(&res["kind"].as_str().unwrap()));
        assert!(!res["message"]["text"].as_str().unwrap().is_empty());
        assert!(res["locations"][0]["logicalLocations"][0]["name"].is_string());
        assert!(res["partialFingerprints"]["segAuditObject/v1"].is_string());
    }
    let priv_result = results.iter().find(|x| x["ruleId"] == ids::PRIVILEGED).unwrap();
    assert_eq!(
        (priv_result["kind"].as_str(), priv_result["level"].as_str()),
        (Some("fail"), Some("warning"))
    );
    assert_eq!(priv_result["locations"][0]["logicalLocations"][0]["fullyQualifiedName"], "container/bad");
    let notes = run["invocations"][0]["toolExecutionNotifications"].as_array().unwrap();
    assert_eq!(notes.len(), r.degraded.len());
}
