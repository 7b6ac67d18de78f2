//! The manifest format, error by error: every test pins line, column and
//! field path.

use std::path::PathBuf;

use super::*;
use crate::model::{
    DEFAULT_INITIAL_BACKOFF, DEFAULT_LIVE_PATH, DEFAULT_MAX_BACKOFF, DEFAULT_MAX_RAPID_CRASHES,
    DEFAULT_RAPID_CRASH_WINDOW, DEFAULT_READY_PATH,
};

/// The example of the manifest format, verbatim, plus the service it
/// depends on.
const FULL: &str = r#"[app]
name = "shop"                    # required

[services.catalog]               # service name: same DNS-label rule
command = ["../../target/release/catalog", "--flag"]
build = ["cargo", "build", "--release", "-p", "catalog"]
instances = 2
depends_on = ["identity"]
env = { CATALOG_PAGE_SIZE = "50" }
grace_period = "10s"
startup_timeout = "30s"

[services.catalog.health]
ready = "/health/ready"
live = "/health/live"

[services.catalog.restart]
initial_backoff = "100ms"
max_backoff = "30s"
max_rapid_crashes = 5
rapid_crash_window = "10s"

[services.identity]
command = ["identity-server"]
"#;

/// A valid header to prepend to service tables under test (2 lines).
const APP: &str = "[app]\nname = \"shop\"\n";

fn parse(source: &str) -> Result<Manifest, ManifestErrors> {
    Manifest::parse(source, Path::new("shop/mortar.toml"))
}

/// `(line, column, field, message)` of every error in `source`.
fn errors(source: &str) -> Vec<(usize, usize, String, String)> {
    match parse(source) {
        Ok(manifest) => panic!("expected errors, parsed {manifest:#?}"),
        Err(errors) => errors
            .errors
            .into_iter()
            .map(|e| (e.line, e.column, e.field, e.message))
            .collect(),
    }
}

/// `(line, field)` of every error in `source`.
fn where_(source: &str) -> Vec<(usize, String)> {
    errors(source)
        .into_iter()
        .map(|(line, _, field, _)| (line, field))
        .collect()
}

fn e(line: usize, column: usize, field: &str, message: &str) -> (usize, usize, String, String) {
    (line, column, field.to_owned(), message.to_owned())
}

fn l(line: usize, field: &str) -> (usize, String) {
    (line, field.to_owned())
}

#[test]
fn the_full_example_parses_to_the_expected_model() {
    let manifest = parse(FULL).unwrap();
    let catalog = ServiceSpec {
        name: "catalog".into(),
        command: vec!["../../target/release/catalog".into(), "--flag".into()],
        build: Some(
            ["cargo", "build", "--release", "-p", "catalog"]
                .map(String::from)
                .to_vec(),
        ),
        instances: 2,
        depends_on: vec!["identity".into()],
        env: BTreeMap::from([("CATALOG_PAGE_SIZE".into(), "50".into())]),
        secrets: vec![],
        callers: None,
        grace_period: Duration::from_secs(10),
        startup_timeout: Duration::from_secs(30),
        health: HealthSpec {
            ready: "/health/ready".into(),
            live: "/health/live".into(),
        },
        restart: RestartPolicy {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(30),
            max_rapid_crashes: 5,
            rapid_crash_window: Duration::from_secs(10),
        },
        autoscale: None,
        deploy: crate::DeploySpec::default(),
        bus_api: crate::BusApi::Native,
    };
    let identity = ServiceSpec {
        name: "identity".into(),
        command: vec!["identity-server".into()],
        build: None,
        instances: 1,
        depends_on: vec![],
        env: BTreeMap::new(),
        secrets: vec![],
        callers: None,
        grace_period: Duration::from_secs(10),
        startup_timeout: Duration::from_secs(30),
        health: HealthSpec::default(),
        restart: RestartPolicy::default(),
        autoscale: None,
        deploy: crate::DeploySpec::default(),
        bus_api: crate::BusApi::Native,
    };
    assert_eq!(
        manifest,
        Manifest {
            path: PathBuf::from("shop/mortar.toml"),
            dir: PathBuf::from("shop"),
            app: AppSpec {
                name: "shop".into()
            },
            services: vec![catalog, identity],
            gateway: crate::GatewaySpec::default(),
            bus: crate::BusSpec::default(),
            secrets: crate::SecretsSpec::default(),
        }
    );
    let order: Vec<&str> = manifest
        .start_order()
        .iter()
        .map(|s| s.name.as_str())
        .collect();
    assert_eq!(order, ["identity", "catalog"]);
    assert_eq!(manifest.service("identity").map(|s| s.instances), Some(1));
}

#[test]
fn non_default_values_are_read_and_absent_ones_defaulted() {
    let m = parse(&format!(
        "{APP}[services.web]\ncommand = [\"web\"]\ngrace_period = \"1m 30s\"\n\
             startup_timeout = \"1h\"\nhealth = {{ ready = \"/ready\" }}\n\
             restart = {{ max_backoff = \"2s\", max_rapid_crashes = 1000 }}\n"
    ))
    .unwrap();
    let web = &m.services[0];
    assert_eq!(web.grace_period, Duration::from_secs(90));
    assert_eq!(web.startup_timeout, Duration::from_secs(3600));
    assert_eq!(web.health.ready, "/ready");
    assert_eq!(web.health.live, DEFAULT_LIVE_PATH);
    assert_eq!(web.restart.max_backoff, Duration::from_secs(2));
    assert_eq!(web.restart.max_rapid_crashes, 1000);
    assert_eq!(web.restart.initial_backoff, DEFAULT_INITIAL_BACKOFF);
    assert_eq!(web.restart.rapid_crash_window, DEFAULT_RAPID_CRASH_WINDOW);
}

#[test]
fn a_minimal_manifest_gets_every_default() {
    let m = parse(&format!("{APP}[services.web]\ncommand = [\"web\"]\n")).unwrap();
    let web = &m.services[0];
    assert_eq!(web.build, None);
    assert_eq!(web.instances, DEFAULT_INSTANCES);
    assert!(web.depends_on.is_empty());
    assert!(web.env.is_empty());
    assert_eq!(web.grace_period, DEFAULT_GRACE_PERIOD);
    assert_eq!(web.startup_timeout, DEFAULT_STARTUP_TIMEOUT);
    assert_eq!(web.health.ready, DEFAULT_READY_PATH);
    assert_eq!(web.health.live, DEFAULT_LIVE_PATH);
    assert_eq!(web.restart.initial_backoff, DEFAULT_INITIAL_BACKOFF);
    assert_eq!(web.restart.max_backoff, DEFAULT_MAX_BACKOFF);
    assert_eq!(web.restart.max_rapid_crashes, DEFAULT_MAX_RAPID_CRASHES);
    assert_eq!(web.restart.rapid_crash_window, DEFAULT_RAPID_CRASH_WINDOW);
    assert_eq!(m.dir, PathBuf::from("shop"));
}

#[test]
fn services_keep_declaration_order() {
    let m = parse(&format!(
        "{APP}[services.zeta]\ncommand = [\"z\"]\n[services.alpha]\ncommand = [\"a\"]\n\
             [services.mid]\ncommand = [\"m\"]\n"
    ))
    .unwrap();
    let names: Vec<&str> = m.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["zeta", "alpha", "mid"]);
}

#[test]
fn three_mistakes_are_reported_exactly_with_line_column_and_field() {
    let source = r#"[app]
name = "shop"

[services.catalog]
command = ["./catalog"]
instances = 0
depends_on = ["nope"]

[services.orders]
comand = ["/bin/true"]
"#;
    assert_eq!(
        errors(source),
        [
            e(
                6,
                13,
                "services.catalog.instances",
                "expected an integer from 1 to 64, found 0"
            ),
            e(
                7,
                15,
                "services.catalog.depends_on[0]",
                r#"unknown service "nope"; services in this manifest: catalog, orders"#
            ),
            e(
                10,
                1,
                "services.orders.comand",
                r#"unknown key "comand"; expected one of: command, build, instances, depends_on, env, grace_period, startup_timeout, health, restart, secrets, callers, autoscale, deploy, bus_api"#
            ),
        ]
    );
    let all = parse(source).unwrap_err();
    assert_eq!(all.path, PathBuf::from("shop/mortar.toml"));
    assert_eq!(
        all.to_string().lines().next(),
        Some(
            "shop/mortar.toml:6:13: services.catalog.instances: expected an integer from 1 to 64, found 0"
        )
    );
}

#[test]
fn missing_required_keys_point_at_the_table_that_lacks_them() {
    assert_eq!(
        errors("[app]\n\n[services.web]\ninstances = 2\n"),
        [
            e(
                1,
                1,
                "app.name",
                r#"missing required key "name"; the app's name, a DNS label"#
            ),
            e(
                3,
                1,
                "services.web.command",
                r#"missing required key "command"; the program and its arguments, such as ["./target/release/app"]"#
            ),
        ]
    );
    // Neither [app] nor any service: the document itself lacks them.
    assert_eq!(where_("# nothing\n"), [l(1, "app"), l(1, "services")]);
    // An inline service table is the table that lacks the command.
    assert_eq!(
        where_(&format!("{APP}[services]\nweb = {{ instances = 2 }}\n")),
        [l(4, "services.web.command")]
    );
}

#[test]
fn a_misspelt_required_key_is_reported_once_as_unknown() {
    assert_eq!(
        where_("[app]\nnmae = \"shop\"\n[services.a]\ncommand = [\"a\"]\n"),
        [l(2, "app.nmae")]
    );
    assert_eq!(
        where_("[apps]\nname = \"shop\"\n[services.a]\ncommand = [\"a\"]\n"),
        [l(1, "apps")]
    );
    // An unrelated unknown key does not hide the missing one.
    assert_eq!(
        where_(&format!("{APP}[services.a]\nflavour = 1\n")),
        [l(3, "services.a.command"), l(4, "services.a.flavour")]
    );
}

#[test]
fn empty_services_are_an_error() {
    assert_eq!(
        errors(&format!("{APP}\n[services]\n")),
        [e(
            4,
            1,
            "services",
            "at least one service is required; add a [services.<name>] table with a command"
        )]
    );
    assert_eq!(
        where_(&format!("services = {{}}\n{APP}")),
        [l(1, "services")]
    );
}

#[test]
fn bus_api_is_native_unless_the_service_asks_for_http() {
    let manifest = parse(&format!(
        "{APP}[services.a]\ncommand = [\"a\"]\n[services.b]\ncommand = [\"b\"]\nbus_api = \"http\"\n"
    ))
    .unwrap();
    let apis: Vec<_> = manifest.services.iter().map(|s| s.bus_api).collect();
    assert_eq!(apis, [crate::BusApi::Native, crate::BusApi::Http]);
    // The default stays out of the serialized form (release digests).
    let json = serde_json::to_value(&manifest.services[0]).unwrap();
    assert!(json.get("bus_api").is_none(), "{json}");
    assert_eq!(
        serde_json::to_value(&manifest.services[1]).unwrap()["bus_api"],
        "http"
    );
    assert_eq!(
        errors(&format!(
            "{APP}[services.a]\ncommand = [\"a\"]\nbus_api = \"grpc\"\n"
        )),
        [e(
            5,
            11,
            "services.a.bus_api",
            r#"expected "native" (the SDK's bus client) or "http" (the HTTP bus API), found "grpc""#
        )]
    );
    assert_eq!(
        where_(&format!(
            "{APP}[services.a]\ncommand = [\"a\"]\nbus_api = true\n"
        )),
        [l(5, "services.a.bus_api")]
    );
}

#[test]
fn unknown_keys_are_caught_at_every_level() {
    let source = format!(
        "color = 1\n{APP}[services.a]\ncommand = [\"a\"]\ninstnaces = 2\n\
             [services.a.health]\nredy = \"/r\"\n[services.a.restart]\nbackoff = \"1s\"\n"
    );
    assert_eq!(
        errors(&source),
        [
            e(
                1,
                1,
                "color",
                r#"unknown key "color"; expected one of: app, services, gateway, bus, secrets"#
            ),
            e(
                6,
                1,
                "services.a.instnaces",
                r#"unknown key "instnaces"; expected one of: command, build, instances, depends_on, env, grace_period, startup_timeout, health, restart, secrets, callers, autoscale, deploy, bus_api"#
            ),
            e(
                8,
                1,
                "services.a.health.redy",
                r#"unknown key "redy"; expected one of: ready, live"#
            ),
            e(
                10,
                1,
                "services.a.restart.backoff",
                r#"unknown key "backoff"; expected one of: initial_backoff, max_backoff, max_rapid_crashes, rapid_crash_window"#
            ),
        ]
    );
    assert_eq!(
        where_("[app]\nname = \"a\"\nowner = \"me\"\n[services.a]\ncommand = [\"a\"]\n"),
        [l(3, "app.owner")]
    );
}

#[test]
fn wrong_types_say_what_was_expected_and_found() {
    let source = r#"app = "shop"
[services.a]
command = "./a"
build = ["make", 1]
instances = "2"
depends_on = "b"
env = ["X=1"]
grace_period = 10
health = "/health"
restart = { max_rapid_crashes = 2.5 }
[services.b]
command = ["./b", true]
env = { PAGE = 50, DEBUG = true, LIST = [1] }
health = { ready = 1 }
[services.c]
command = []
"#;
    assert_eq!(
        errors(source),
        [
            e(1, 7, "app", "expected a table, found a string"),
            e(
                3,
                11,
                "services.a.command",
                "expected a non-empty array of strings, found a string"
            ),
            e(
                4,
                18,
                "services.a.build[1]",
                "expected a string, found an integer"
            ),
            e(
                5,
                13,
                "services.a.instances",
                "expected an integer from 1 to 64, found a string"
            ),
            e(
                6,
                14,
                "services.a.depends_on",
                "expected an array of service names, found a string"
            ),
            e(7, 7, "services.a.env", "expected a table, found an array"),
            e(
                8,
                16,
                "services.a.grace_period",
                r#"expected a duration such as "10s" or "500ms", found an integer"#
            ),
            e(
                9,
                10,
                "services.a.health",
                "expected a table, found a string"
            ),
            e(
                10,
                33,
                "services.a.restart.max_rapid_crashes",
                "expected an integer from 1 to 1000, found a float"
            ),
            e(
                12,
                19,
                "services.b.command[1]",
                "expected a string, found a boolean"
            ),
            e(
                13,
                16,
                "services.b.env.PAGE",
                r#"expected a string, found an integer; quote it: PAGE = "50""#
            ),
            e(
                13,
                28,
                "services.b.env.DEBUG",
                r#"expected a string, found a boolean; quote it: DEBUG = "true""#
            ),
            e(
                13,
                41,
                "services.b.env.LIST",
                "expected a string, found an array"
            ),
            e(
                14,
                20,
                "services.b.health.ready",
                "expected an HTTP path starting with '/', found an integer"
            ),
            e(
                16,
                11,
                "services.c.command",
                "expected a non-empty array of strings, found an empty array"
            ),
        ]
    );
    assert_eq!(
        errors(&format!("services = [\"a\"]\n{APP}")),
        [e(1, 12, "services", "expected a table, found an array")]
    );
    assert_eq!(
        where_(&format!("{APP}[services]\na = 5\n")),
        [l(4, "services.a")]
    );
}

#[test]
fn empty_command_strings_and_build_programs_are_rejected() {
    let source = format!(
        "{APP}[services.a]\ncommand = [\"\", \"x\"]\nbuild = [\"\", \"-p\"]\n\
             [services.b]\ncommand = [\"b\", \"\"]\nbuild = [\"make\", \"\"]\n"
    );
    assert_eq!(
        errors(&source),
        [
            e(
                4,
                12,
                "services.a.command[0]",
                "expected a non-empty string"
            ),
            e(
                5,
                10,
                "services.a.build[0]",
                "expected a program name, found an empty string"
            ),
            e(
                7,
                17,
                "services.b.command[1]",
                "expected a non-empty string"
            ),
        ]
    );
}

#[test]
fn names_must_be_dns_labels() {
    let long = "a".repeat(64);
    let source = format!(
        "[app]\nname = \"Shop\"\n[services.Bad_Name]\ncommand = [\"a\"]\n[services.-edge]\ncommand = [\"a\"]\n\
             [services.{long}]\ncommand = [\"a\"]\n[services.ok-1]\ncommand = [\"a\"]\n"
    );
    let found = errors(&source);
    assert_eq!(
        found
            .iter()
            .map(|(line, col, field, _)| (*line, *col, field.as_str()))
            .collect::<Vec<_>>(),
        [
            (2, 8, "app.name"),
            (3, 11, "services.Bad_Name"),
            (5, 11, "services.-edge"),
            (7, 11, &*format!("services.{long}"))
        ]
    );
    assert_eq!(
        found[0].3,
        r#"expected a DNS label (1-63 characters of a-z, 0-9 and '-', not starting or ending with '-'), found "Shop""#
    );
    assert!(
        found[1]
            .3
            .starts_with("expected a service name that is a DNS label"),
        "{}",
        found[1].3
    );
    assert!(
        parse(&format!(
            "[app]\nname = \"{}\"\n[services.a]\ncommand = [\"a\"]\n",
            "a".repeat(63)
        ))
        .is_ok()
    );
    assert!(
        is_dns_label("a-1") && !is_dns_label("") && !is_dns_label("a-") && !is_dns_label("a.b")
    );
}

#[test]
fn env_keys_must_be_valid_and_not_reserved() {
    let source = format!(
        "{APP}[services.a]\ncommand = [\"a\"]\n[services.a.env]\nPORT = \"80\"\nMORTAR_APP = \"x\"\n\
             lower = \"x\"\n1ABC = \"x\"\n_OK_1 = \"fine\"\nMORTARX = \"fine\"\n"
    );
    assert_eq!(
        errors(&source),
        [
            e(
                6,
                1,
                "services.a.env.PORT",
                r#""PORT" is reserved: mortar sets it for every instance"#
            ),
            e(
                7,
                1,
                "services.a.env.MORTAR_APP",
                r#""MORTAR_APP" is reserved: mortar sets the MORTAR_* variables itself"#
            ),
            e(
                8,
                1,
                "services.a.env.lower",
                r#"invalid environment variable name "lower"; expected upper-case letters, digits and '_', not starting with a digit (^[A-Z_][A-Z0-9_]*$)"#
            ),
            e(
                9,
                1,
                "services.a.env.1ABC",
                r#"invalid environment variable name "1ABC"; expected upper-case letters, digits and '_', not starting with a digit (^[A-Z_][A-Z0-9_]*$)"#
            ),
        ]
    );
    let ok = parse(&format!(
        "{APP}[services.a]\ncommand = [\"a\"]\nenv = {{ _OK_1 = \"x\", MORTARX = \"y\" }}\n"
    ))
    .unwrap();
    assert_eq!(ok.services[0].env.len(), 2);
}

#[test]
fn durations_must_parse_and_lie_in_range() {
    let source = format!(
        "{APP}[services.a]\ncommand = [\"a\"]\ngrace_period = \"ten seconds\"\nstartup_timeout = \"0s\"\n\
             [services.b]\ncommand = [\"b\"]\ngrace_period = \"61m\"\nstartup_timeout = \"\"\n\
             [services.b.restart]\nrapid_crash_window = \"soon\"\n"
    );
    let found = errors(&source);
    assert_eq!(
        found
            .iter()
            .map(|(line, col, field, _)| (*line, *col, field.as_str()))
            .collect::<Vec<_>>(),
        [
            (5, 16, "services.a.grace_period"),
            (6, 19, "services.a.startup_timeout"),
            (9, 16, "services.b.grace_period"),
            (10, 19, "services.b.startup_timeout"),
            (12, 22, "services.b.restart.rapid_crash_window"),
        ]
    );
    assert!(
        found[0]
            .3
            .starts_with(r#"invalid duration "ten seconds" ("#)
            && found[0]
                .3
                .ends_with(r#"); expected a duration such as "10s" or "500ms""#),
        "{}",
        found[0].3
    );
    assert_eq!(
        found[1].3,
        r#"expected a duration greater than 0 and at most 1h, found "0s""#
    );
    assert_eq!(
        found[2].3,
        r#"expected a duration greater than 0 and at most 1h, found "61m""#
    );
}

#[test]
fn restart_limits_are_checked() {
    let source = format!(
        "{APP}[services.a]\ncommand = [\"a\"]\nrestart = {{ initial_backoff = \"2s\", max_backoff = \"1s\" }}\n\
             [services.b]\ncommand = [\"b\"]\n[services.b.restart]\ninitial_backoff = \"1m\"\nmax_rapid_crashes = 0\n\
             [services.c]\ncommand = [\"c\"]\nrestart = {{ max_rapid_crashes = 1001 }}\n"
    );
    assert_eq!(
        errors(&source),
        [
            e(
                5,
                51,
                "services.a.restart.max_backoff",
                r#"expected a duration of at least initial_backoff (2s), found "1s""#
            ),
            e(
                9,
                19,
                "services.b.restart.initial_backoff",
                r#"expected a duration of at most max_backoff (30s, the default), found "1m""#
            ),
            e(
                10,
                21,
                "services.b.restart.max_rapid_crashes",
                "expected an integer from 1 to 1000, found 0"
            ),
            e(
                13,
                33,
                "services.c.restart.max_rapid_crashes",
                "expected an integer from 1 to 1000, found 1001"
            ),
        ]
    );
}

#[test]
fn health_paths_must_start_with_a_slash() {
    assert_eq!(
        errors(&format!(
            "{APP}[services.a]\ncommand = [\"a\"]\nhealth = {{ live = \"health/live\" }}\n"
        )),
        [e(
            5,
            19,
            "services.a.health.live",
            r#"expected an HTTP path starting with '/', found "health/live""#
        )]
    );
}

#[test]
fn instances_outside_1_to_64_are_rejected() {
    for (value, col) in [
        ("0", 13),
        ("65", 13),
        ("-1", 13),
        ("99999999999999999999", 13),
    ] {
        let found = errors(&format!(
            "{APP}[services.a]\ncommand = [\"a\"]\ninstances = {value}\n"
        ));
        assert_eq!(
            found,
            [e(
                5,
                col,
                "services.a.instances",
                &format!("expected an integer from 1 to 64, found {value}")
            )]
        );
    }
    let m = parse(&format!(
        "{APP}[services.a]\ncommand = [\"a\"]\ninstances = 64\n"
    ))
    .unwrap();
    assert_eq!(m.services[0].instances, 64);
}

#[test]
fn dependency_problems_are_reported_at_the_entry() {
    let source = format!(
        "{APP}[services.a]\ncommand = [\"a\"]\ndepends_on = [\"b\", \"a\", \"invetory\", 7]\n\
             [services.b]\ncommand = [\"b\"]\ndepends_on = []\n"
    );
    assert_eq!(
        errors(&source),
        [
            e(
                5,
                20,
                "services.a.depends_on[1]",
                r#"service "a" cannot depend on itself"#
            ),
            e(
                5,
                25,
                "services.a.depends_on[2]",
                r#"unknown service "invetory"; services in this manifest: a, b"#
            ),
            e(
                5,
                37,
                "services.a.depends_on[3]",
                "expected a service name, found an integer"
            ),
        ]
    );
    let ok = parse(&format!(
            "{APP}[services.a]\ncommand = [\"a\"]\ndepends_on = [\"b\", \"b\"]\n[services.b]\ncommand = [\"b\"]\n"
        ))
        .unwrap();
    assert_eq!(ok.services[0].depends_on, ["b"]);
}

#[test]
fn cycles_are_reported_with_their_path() {
    let two = format!(
        "{APP}[services.a]\ncommand = [\"a\"]\ndepends_on = [\"b\"]\n\
             [services.b]\ncommand = [\"b\"]\ndepends_on = [\"a\"]\n"
    );
    assert_eq!(
        errors(&two),
        [e(
            8,
            15,
            "services.b.depends_on[0]",
            "dependency cycle: a -> b -> a"
        )]
    );
    let three = format!(
        "{APP}[services.web]\ncommand = [\"w\"]\ndepends_on = [\"db\"]\n\
             [services.db]\ncommand = [\"d\"]\ndepends_on = [\"cache\"]\n\
             [services.cache]\ncommand = [\"c\"]\ndepends_on = [\"log\", \"web\"]\n\
             [services.log]\ncommand = [\"l\"]\n"
    );
    assert_eq!(
        errors(&three),
        [e(
            11,
            22,
            "services.cache.depends_on[1]",
            "dependency cycle: web -> db -> cache -> web"
        )]
    );
}

#[test]
fn a_syntax_error_is_one_error_with_its_position() {
    let found = errors("[app]\nname = \"shop\n[services.a]\ncommand = [\"a\"]\n");
    assert_eq!(found.len(), 1, "{found:?}");
    let (line, column, field, message) = &found[0];
    assert_eq!((*line, *column, field.as_str()), (2, 13, ""));
    assert!(message.starts_with("invalid basic string"), "{message}");

    assert_eq!(
        errors("[app]\nname = \"shop\"\nname = \"again\"\n"),
        [e(
            3,
            1,
            "",
            r#"duplicate key "name"; a key may appear only once per table"#
        )]
    );
    let display = parse("[app\n").unwrap_err().to_string();
    assert!(display.starts_with("shop/mortar.toml:1:"), "{display}");
}

#[test]
fn every_error_of_a_big_mess_is_reported_in_source_order() {
    let source = r#"[app]
name = "My Shop"
[services.a]
command = ["a"]
instances = 100
depends_on = ["zzz"]
env = { PORT = "1" }
grace_period = "0s"
[services.b]
build = []
"#;
    assert_eq!(
        where_(source),
        [
            l(2, "app.name"),
            l(5, "services.a.instances"),
            l(6, "services.a.depends_on[0]"),
            l(7, "services.a.env.PORT"),
            l(8, "services.a.grace_period"),
            l(9, "services.b.command"),
            l(10, "services.b.build"),
        ]
    );
}

#[test]
fn load_reads_a_file_and_makes_its_paths_absolute() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mortar.toml");
    std::fs::write(&path, FULL).unwrap();
    let m = Manifest::load(&path).unwrap();
    assert_eq!(m.path, path);
    assert_eq!(m.dir, dir.path());
    assert_eq!(
        m.resolve_program(&m.services[0]),
        dir.path().join("../../target/release/catalog")
    );
    assert_eq!(
        m.resolve_program(&m.services[1]),
        PathBuf::from("identity-server")
    );
}

#[test]
fn load_reports_a_missing_file_and_an_invalid_one() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.toml");
    match Manifest::load(&missing) {
        Err(LoadError::Io { path, source }) => {
            assert_eq!(path, missing);
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        }
        other => panic!("expected an I/O error, got {other:?}"),
    }
    let bad = dir.path().join("mortar.toml");
    std::fs::write(&bad, "[app]\nname = \"x\"\n").unwrap();
    match Manifest::load(&bad) {
        Err(LoadError::Invalid(errors)) => {
            assert_eq!(errors.path, bad);
            assert_eq!(errors.errors.len(), 1);
            assert_eq!(errors.errors[0].field, "services");
        }
        other => panic!("expected an invalid manifest, got {other:?}"),
    }
}

#[test]
fn the_shop_example_is_valid() {
    let shop = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/shop/mortar.toml"
    );
    let m = Manifest::load(Path::new(shop)).unwrap();
    assert_eq!(m.app.name, "shop");
    assert_eq!(m.service("catalog").map(|s| s.instances), Some(2));
}

#[test]
fn specs_serialize_durations_as_manifest_text() {
    let m = parse(FULL).unwrap();
    let json = serde_json::to_value(&m.services[0]).unwrap();
    assert_eq!(json["grace_period"], "10s");
    assert_eq!(json["restart"]["initial_backoff"], "100ms");
    assert_eq!(json["env"]["CATALOG_PAGE_SIZE"], "50");
}

#[test]
fn services_name_their_secrets_and_the_secrets_file_defaults_beside_the_manifest() {
    let source = format!(
        "{APP}[secrets]\nfile = \"config/app.cms\"\n[services.a]\ncommand = [\"a\"]\nsecrets = [\"DB_PASSWORD\", \"API_KEY\"]\n[services.b]\ncommand = [\"b\"]\n"
    );
    let m = parse(&source).unwrap();
    assert_eq!(m.service("a").unwrap().secrets, ["DB_PASSWORD", "API_KEY"]);
    assert!(m.service("b").unwrap().secrets.is_empty());
    assert_eq!(m.secrets_file(), PathBuf::from("shop/config/app.cms"));
    assert!(m.uses_secrets());

    let plain = parse(&format!("{APP}[services.a]\ncommand = [\"a\"]\n")).unwrap();
    assert_eq!(plain.secrets_file(), PathBuf::from("shop/secrets.cms"));
    assert!(!plain.uses_secrets());
}

#[test]
fn secret_names_must_be_variable_names_listed_once_and_not_also_in_env() {
    let source = format!(
        "{APP}[secrets]\nfile = \"\"\nkey = \"k\"\n[services.a]\ncommand = [\"a\"]\nenv = {{ TOKEN = \"x\" }}\n\
         secrets = [\"PORT\", \"db\", \"A\", \"A\", \"TOKEN\", 7]\n"
    );
    assert_eq!(
        errors(&source),
        [
            e(
                4,
                8,
                "secrets.file",
                r#"expected a path to the CMS secrets file, relative to the manifest, found """#
            ),
            e(
                5,
                1,
                "secrets.key",
                "unknown key \"key\"; expected one of: file"
            ),
            e(
                9,
                12,
                "services.a.secrets[0]",
                r#""PORT" is reserved: mortar sets it for every instance"#
            ),
            e(
                9,
                20,
                "services.a.secrets[1]",
                r#"invalid secret name "db"; expected upper-case letters, digits and '_', not starting with a digit (^[A-Z_][A-Z0-9_]*$)"#
            ),
            e(
                9,
                31,
                "services.a.secrets[3]",
                r#"secret "A" is listed twice"#
            ),
            e(
                9,
                36,
                "services.a.secrets[4]",
                r#""TOKEN" is both a secret and an env entry of this service; remove it from env so the secret is what the service gets"#
            ),
            e(
                9,
                45,
                "services.a.secrets[5]",
                "expected a secret name, found an integer"
            ),
        ]
    );
}

#[test]
fn callers_name_services_or_the_gateway() {
    let toml = r#"
[app]
name = "shop"
[services.catalog]
command = ["./catalog"]
callers = ["gateway", "ordering"]
[services.ordering]
command = ["./ordering"]
callers = ["nobody"]
"#;
    let errors = parse(toml).unwrap_err();
    let text = errors.to_string();
    assert!(text.contains("services.ordering.callers[0]"), "{text}");
    assert!(text.contains("unknown caller \"nobody\""), "{text}");
    let ok = parse(&toml.replace(r#"callers = ["nobody"]"#, "")).unwrap();
    assert_eq!(
        ok.service("catalog").unwrap().callers.as_deref(),
        Some(&["gateway".to_owned(), "ordering".to_owned()][..])
    );
    assert_eq!(ok.service("ordering").unwrap().callers, None);
}
