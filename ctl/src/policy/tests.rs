use super::*;

const SHOP: &str = "\
version: 1
project: shop
networks:
  backend: { internal: true }
services:
  web: { ingress: [{ from: world, ports: [8080/tcp] }] }
  api: { ingress: [{ from: [web], ports: [9000/tcp] }], networks: [backend] }
  db:  { ingress: [{ from: [api], ports: [5432/tcp] }], egress: none, networks: [backend] }
";

fn err(text: &str) -> (usize, usize, String) {
    match parse_policy(text, "shop.yaml").unwrap_err() {
        PolicyError::Invalid { line, column, message, .. } => (line, column, message),
        other => panic!("expected a located error, got {other}"),
    }
}

#[test]
fn parses_the_issue_sketch() {
    let p = parse_policy(SHOP, "shop.yaml").unwrap();
    assert_eq!(p.project(), Some("shop"));
    assert!(p.networks["backend"].internal && p.networks["backend"].icc);
    let db = &p.services["db"];
    assert_eq!(db.egress, Egress::Allow(vec![]));
    let Ingress::Allow(rules) = &db.ingress else { panic!() };
    assert_eq!(rules[0].from.0, vec![Peer::Service(ServiceRef { project: None, service: "api".into() })]);
    assert_eq!(rules[0].ports.as_ref().unwrap().0, vec!["5432/tcp".parse().unwrap()]);
    let web = &p.services["web"];
    assert_eq!(web.egress, Egress::Any);
    assert_eq!(p.origin, "shop.yaml");
}

#[test]
fn unknown_service_is_located_with_known_list() {
    let text = SHOP.replace("from: [web]", "from: [wbe]");
    let e = parse_policy(&text, "shop.yaml").unwrap_err().to_string();
    assert_eq!(
        e,
        "shop.yaml:7:29: unknown service `wbe` in services.api.ingress[0].from[0] (known: api, db, web)"
    );
}

#[test]
fn bad_values_are_located() {
    let (l, c, m) = err(&SHOP.replace("9000/tcp", "90000/tcp"));
    assert_eq!((l, c), (7, 43), "{m}");
    assert!(m.contains("bad port `90000/tcp`") && m.contains("services.api.ingress[0].ports[0]"), "{m}");
    let (l, _, m) = err(&SHOP.replace("egress: none", "egress: [10.0.0.1/8]"));
    assert_eq!(l, 8);
    assert!(m.contains("host bits are set (did you mean `10.0.0.0/8`?)"), "{m}");
    let (l, c, m) = err(&SHOP.replace("version: 1", "version: 2"));
    assert_eq!((l, c), (1, 10));
    assert!(m.contains("unsupported policy version 2"), "{m}");
    let (_, _, m) = err(&SHOP.replace("5432/tcp", "5432/sctp"));
    assert!(m.contains("unknown protocol `sctp`"), "{m}");
    let (_, _, m) = err(&SHOP.replace("8080/tcp", "9-8/tcp"));
    assert!(m.contains("9 is greater than 8"), "{m}");
    let (l, _, m) = err(&SHOP.replace("egress: none", "egress: nothing"));
    assert_eq!(l, 8);
    assert!(m.contains("expected `any`, `none`"), "{m}");
    let (_, _, m) = err(&SHOP.replace("networks: [backend] }\n  db", "networks: [front] }\n  db"));
    assert!(m.contains("unknown network `front`") && m.contains("declared: backend"), "{m}");
    let (_, _, m) = err(&SHOP.replace("egress: none", "egress: [world]"));
    assert!(m.contains("`world` is not an egress target"), "{m}");
}

#[test]
fn unknown_fields_and_duplicates_are_refused() {
    let (l, c, m) = err(&SHOP.replace("{ ingress: [{ from: world", "{ ingres: [{ from: world"));
    assert_eq!(l, 6);
    assert!(m.contains("unknown field `ingres`"), "{m} at {c}");
    let dup = format!("{SHOP}  db: {{ ingress: any }}\n");
    let (l, c, m) = err(&dup);
    assert_eq!((l, c), (9, 3));
    assert_eq!(m, "duplicate key `db` in services");
    let (l, _, m) = err(&SHOP.replace("project: shop\n", "project: shop\nproject: shop2\n"));
    assert_eq!(l, 3);
    assert!(m.contains("duplicate key `project`"), "{m}");
    let (_, _, m) = err(&SHOP.replace("version: 1\n", ""));
    assert!(m.contains("missing field `version`"), "{m}");
    let (_, _, m) = err(&SHOP.replace("from: [api]", "from: []"));
    assert!(m.contains("empty list"), "{m}");
    let (_, _, m) = err(&SHOP.replace("ports: [5432/tcp]", "ports: []"));
    assert!(m.contains("empty `ports`"), "{m}");
    let (_, _, m) = err(&SHOP.replace("  web:", "  \"\":"));
    assert!(m.contains("bad name ``"), "{m}");
}

#[test]
fn syntax_errors_are_located() {
    let (l, _, _) = err("version: 1\nservices:\n  web: { ingress: [\n");
    assert!(l >= 3);
    let e = parse_policy("", "empty.yaml").unwrap_err().to_string();
    assert!(e.starts_with("empty.yaml"), "{e}");
}

#[test]
fn peers_in_all_spellings() {
    let text = "version: 1\nservices:\n  a: { ingress: [{ from: [b, billing/api, 10.0.0.0/8, 'fd00::/8'] }, { from: b }] }\n  b: { ingress: any, egress: [a, 192.168.0.1] }\n";
    let p = parse_policy(text, "p.yaml").unwrap();
    assert_eq!(p.project(), None);
    let Ingress::Allow(rules) = &p.services["a"].ingress else { panic!() };
    assert_eq!(rules[0].from.0.len(), 4);
    assert!(
        matches!(&rules[0].from.0[1], Peer::Service(ServiceRef { project: Some(p), .. }) if p == "billing")
    );
    assert!(rules[0].ports.is_none());
    assert_eq!(p.services["b"].ingress, Ingress::Any);
}

#[test]
fn compose_x_seg() {
    let compose = "\
name: shop
services:
  web: { image: busybox }
  api: { image: busybox }
x-seg:
  version: 1
  services:
    web: { ingress: [{ from: world, ports: [80] }] }
    api: { ingress: [{ from: [web], ports: [9000/tcp] }] }
";
    let p = parse_compose(compose, "docker-compose.yml", Some("ignored")).unwrap();
    assert_eq!(p.project(), Some("shop"));
    assert_eq!(p.origin, "docker-compose.yml#x-seg");
    let p = parse_compose(&compose.replace("name: shop\n", ""), "c.yml", Some("My Shop")).unwrap();
    assert_eq!(p.project(), Some("myshop"));
    let bad = compose.replace("    api: { ingress", "    apx: { ingress");
    let e = parse_compose(&bad, "docker-compose.yml", None).unwrap_err().to_string();
    assert!(e.starts_with("docker-compose.yml:9:5: `apx` is not a service of this compose file"), "{e}");
    let bad = compose.replace("from: [web]", "from: [wbe]");
    let e = parse_compose(&bad, "docker-compose.yml", None).unwrap_err().to_string();
    assert!(e.contains("x-seg.services.api.ingress[0].from[0]"), "{e}");
    let e = parse_compose("services: {}\n", "c.yml", None).unwrap_err().to_string();
    assert!(e.contains("without an `x-seg:` key"), "{e}");
}

#[test]
fn the_shop_example_lints_in_both_forms() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/shop");
    let plain = lint(&root.join("policy.yaml")).unwrap();
    let inline = lint(&root.join("docker-compose.yml")).unwrap();
    assert_eq!(plain.project(), Some("shop"));
    assert_eq!(inline.project(), Some("shop"), "the directory name");
    assert_eq!(plain.services.len(), 3);
    assert_eq!(plain.services["db"].ingress, inline.services["db"].ingress);
    assert_eq!(plain.services["api"].egress, inline.services["api"].egress);
}
