//! Table-driven SPEC §4 test against real PostgreSQL: each case is a sequence of event
//! phases, and after each phase the exact rows every login role sees through the view.

mod common;

use common::*;
use policy_push::event::*;
use policy_push::simulate::Record;

/// raw.t: id, email [pii], region [geo], dept.
const RAW: &str = "
CREATE SCHEMA raw;
CREATE TABLE raw.t (id integer, email text, region text, dept text);
INSERT INTO raw.t VALUES (1, 'a@x', 'eu', 'x'), (2, 'b@x', 'us', 'y'), (3, NULL, 'eu', 'y');
";

const Q: &str = "SELECT id, email, region FROM immuta.v ORDER BY id";

/// A user's profile in a case: groups, regions, current project purposes, acknowledged
/// purposes, subscribed or not.
#[derive(Clone)]
struct P {
    groups: &'static [&'static str],
    regions: Option<&'static [&'static str]>,
    project: Option<&'static [&'static str]>,
    acknowledged: &'static [&'static str],
    subscribed: bool,
}

const PLAIN: P = P {
    groups: &[],
    regions: None,
    project: None,
    acknowledged: &[],
    subscribed: true,
};

/// What a role sees: a list of (id, email, region), or None when the view is missing.
type Seen = Option<Vec<(&'static str, Option<String>, Option<&'static str>)>>;

enum Ev {
    Policy(
        &'static str,
        i64,
        Status,
        Rule,
        &'static [&'static str],
        &'static [&'static str],
        &'static [&'static str],
        &'static [&'static str],
    ),
    DeletePolicy(&'static str),
    Source(i64, Status, &'static [&'static str]),
    Profile(usize, i64, P),
    DeleteProfile(usize),
}

struct Phase {
    events: Vec<Ev>,
    /// Per role (index into the case's roles): what it sees.
    expect: Vec<Seen>,
}

struct Case {
    name: &'static str,
    phases: Vec<Phase>,
}

fn s(v: &str) -> Option<String> {
    Some(v.to_string())
}

fn h(v: &str) -> Option<String> {
    Some(sha256_hex(v))
}

/// All three rows, emails transformed by `f` (None for the NULL email of row 3 unless
/// `f` says otherwise).
fn all(f: impl Fn(Option<&str>) -> Option<String>) -> Seen {
    Some(vec![
        ("1", f(Some("a@x")), Some("eu")),
        ("2", f(Some("b@x")), Some("us")),
        ("3", f(None), Some("eu")),
    ])
}

fn raw(e: Option<&str>) -> Option<String> {
    e.map(String::from)
}

fn eu(f: impl Fn(Option<&str>) -> Option<String>) -> Seen {
    Some(vec![
        ("1", f(Some("a@x")), Some("eu")),
        ("3", f(None), Some("eu")),
    ])
}

fn none() -> Seen {
    Some(vec![])
}

const TAGS: &[&str] = &["sales"];
const NO: &[&str] = &[];

/// A policy on tag `sales` without exceptions, at a given version and status.
fn pol_at(id: &'static str, version: i64, status: Status, rule: Rule) -> Ev {
    Ev::Policy(id, version, status, rule, TAGS, NO, NO, NO)
}

fn pol(id: &'static str, rule: Rule) -> Ev {
    Ev::Policy(id, 1, Status::Active, rule, TAGS, NO, NO, NO)
}

fn cases() -> Vec<Case> {
    let hash = || mask("pii", MaskMethod::Hash, None);
    let constant = |c: &str| mask("pii", MaskMethod::Constant, Some(c));
    let region = || matching("geo", "region");
    let eu_user = P {
        regions: Some(&["eu"]),
        ..PLAIN
    };
    vec![
        Case {
            name: "subscription and missing profile",
            phases: vec![Phase {
                events: vec![
                    Ev::Profile(0, 1, PLAIN),
                    Ev::Profile(
                        1,
                        1,
                        P {
                            subscribed: false,
                            ..PLAIN
                        },
                    ),
                ],
                expect: vec![all(raw), none(), none()],
            }],
        },
        Case {
            name: "matching attribute; no attribute means no rows",
            phases: vec![Phase {
                events: vec![
                    pol("p", region()),
                    Ev::Profile(0, 1, eu_user.clone()),
                    Ev::Profile(1, 1, PLAIN),
                ],
                expect: vec![eu(raw), none()],
            }],
        },
        Case {
            name: "member of group, and two row filters combine with AND",
            phases: vec![Phase {
                events: vec![
                    pol("p1", member_of("g")),
                    pol("p2", region()),
                    Ev::Profile(
                        0,
                        1,
                        P {
                            groups: &["g"],
                            ..eu_user.clone()
                        },
                    ),
                    Ev::Profile(1, 1, eu_user.clone()),
                    Ev::Profile(
                        2,
                        1,
                        P {
                            groups: &["g"],
                            regions: Some(&["eu", "us"]),
                            ..PLAIN
                        },
                    ),
                ],
                expect: vec![eu(raw), none(), all(raw)],
            }],
        },
        Case {
            name:
                "hash keeps NULL, nullify, constant replaces NULL; lowest applicable policy id wins",
            phases: vec![Phase {
                events: vec![
                    Ev::Policy(
                        "p1",
                        1,
                        Status::Active,
                        hash(),
                        NO,
                        &["ds"],
                        &["no_hash"],
                        NO,
                    ),
                    Ev::Policy(
                        "p2",
                        1,
                        Status::Active,
                        mask("pii", MaskMethod::Nullify, None),
                        NO,
                        &["ds"],
                        &["no_null"],
                        NO,
                    ),
                    Ev::Policy(
                        "p3",
                        1,
                        Status::Active,
                        constant("***"),
                        NO,
                        &["ds"],
                        NO,
                        NO,
                    ),
                    Ev::Profile(
                        0,
                        1,
                        P {
                            groups: &["no_hash"],
                            ..PLAIN
                        },
                    ),
                    Ev::Profile(1, 1, PLAIN),
                    Ev::Profile(
                        2,
                        1,
                        P {
                            groups: &["no_hash", "no_null"],
                            ..PLAIN
                        },
                    ),
                ],
                expect: vec![all(|_| None), all(|e| e.map(sha256_hex)), all(|_| s("***"))],
            }],
        },
        Case {
            name: "purpose exception needs the purpose in the current project and acknowledged",
            phases: vec![Phase {
                events: vec![
                    Ev::Policy(
                        "p",
                        1,
                        Status::Active,
                        member_of("nobody"),
                        TAGS,
                        NO,
                        NO,
                        &["audit"],
                    ),
                    Ev::Profile(
                        0,
                        1,
                        P {
                            project: Some(&["audit"]),
                            acknowledged: &["audit"],
                            ..PLAIN
                        },
                    ),
                    Ev::Profile(
                        1,
                        1,
                        P {
                            project: Some(&["audit"]),
                            acknowledged: &[],
                            ..PLAIN
                        },
                    ),
                    Ev::Profile(
                        2,
                        1,
                        P {
                            project: Some(&["other"]),
                            acknowledged: &["audit"],
                            ..PLAIN
                        },
                    ),
                ],
                expect: vec![all(raw), none(), none()],
            }],
        },
        Case {
            name:
                "targeting by column tag and by id; a rule on a tag the source lacks does not apply",
            phases: vec![Phase {
                events: vec![
                    Ev::Policy("p1", 1, Status::Active, hash(), &["pii"], NO, NO, NO),
                    Ev::Policy(
                        "p2",
                        1,
                        Status::Active,
                        matching("nosuch", "region"),
                        NO,
                        &["ds"],
                        NO,
                        NO,
                    ),
                    Ev::Policy(
                        "p3",
                        1,
                        Status::Active,
                        member_of("g"),
                        &["unrelated"],
                        &["other-ds"],
                        NO,
                        NO,
                    ),
                    Ev::Profile(0, 1, PLAIN),
                ],
                expect: vec![Some(vec![
                    ("1", h("a@x"), Some("eu")),
                    ("2", h("b@x"), Some("us")),
                    ("3", None, Some("eu")),
                ])],
            }],
        },
        Case {
            name: "disable, re-enable and delete a policy",
            phases: vec![
                Phase {
                    events: vec![pol("p", hash()), Ev::Profile(0, 1, PLAIN)],
                    expect: vec![all(|e| e.map(sha256_hex))],
                },
                Phase {
                    events: vec![pol_at("p", 2, Status::Disabled, hash())],
                    expect: vec![all(raw)],
                },
                Phase {
                    events: vec![pol_at("p", 3, Status::Active, constant("c"))],
                    expect: vec![all(|_| s("c"))],
                },
                // An older version arriving late changes nothing.
                Phase {
                    events: vec![pol_at("p", 2, Status::Disabled, hash())],
                    expect: vec![all(|_| s("c"))],
                },
                Phase {
                    events: vec![Ev::DeletePolicy("p")],
                    expect: vec![all(raw)],
                },
            ],
        },
        Case {
            name: "disable, re-enable and delete a data source; delete a profile",
            phases: vec![
                Phase {
                    events: vec![Ev::Profile(0, 1, PLAIN)],
                    expect: vec![all(raw)],
                },
                Phase {
                    events: vec![Ev::Source(2, Status::Disabled, TAGS)],
                    expect: vec![None],
                },
                Phase {
                    events: vec![Ev::Source(3, Status::Active, TAGS)],
                    expect: vec![all(raw)],
                },
                Phase {
                    events: vec![Ev::DeleteProfile(0)],
                    expect: vec![none()],
                },
                Phase {
                    events: vec![Ev::Profile(0, 2, PLAIN)],
                    expect: vec![all(raw)],
                },
                Phase {
                    events: vec![
                        Ev::Source(4, Status::Active, TAGS),
                        Ev::Source(5, Status::Disabled, TAGS),
                    ],
                    expect: vec![None],
                },
            ],
        },
    ]
}

fn record(ev: &Ev, db: &str, users: &[String]) -> Record {
    match ev {
        Ev::Policy(id, v, status, rule, tags, ids, ex_groups, ex_purposes) => {
            let mut r = policy(id, *v, rule.clone(), tags, ids, ex_groups);
            if let Some(Event::Policy(p)) = &mut r.value {
                p.status = *status;
                p.exceptions.purposes = strings(ex_purposes);
            }
            r
        }
        Ev::DeletePolicy(id) => tombstone(Kind::Policy, id),
        Ev::Source(v, status, tags) => data_source(Ds {
            id: "ds",
            version: *v,
            host: HOST,
            database: db,
            schema: "raw",
            table: "t",
            view: "v",
            columns: &[("id", &[]), ("email", &["pii"]), ("region", &["geo"])],
            tags,
            status: *status,
        }),
        Ev::Profile(i, v, p) => {
            let attrs: Vec<(&str, &[&str])> =
                p.regions.map(|r| vec![("region", r)]).unwrap_or_default();
            let mut r = profile(
                &users[*i],
                *v,
                p.groups,
                &attrs,
                if p.subscribed { &["ds"] } else { &[] },
            );
            if let Some(Event::Profile(u)) = &mut r.value {
                u.current_project = p.project.map(|purposes| Project {
                    id: "proj".into(),
                    purposes: strings(purposes),
                });
                u.acknowledged_purposes = strings(p.acknowledged);
            }
            r
        }
        Ev::DeleteProfile(i) => tombstone(Kind::Profile, &users[*i]),
    }
}

/// The analyst attacks the view with their own SQL: a leaky function of theirs, made as
/// cheap as possible so that the planner would run it first, records every row it is
/// shown; and failing casts put a value into an error message. Each may only ever see
/// rows and values that the view shows this analyst (`shown`: id, email, region).
async fn probe(db: &Database, user: &str, shown: &[Vec<Option<String>>], what: &str) {
    let c = db.as_role(user).await;
    c.batch_execute(
        "CREATE TEMP TABLE loot (id text, email text, region text);
         CREATE FUNCTION pg_temp.leak(a text, b text, c text) RETURNS boolean LANGUAGE plpgsql
           COST 0.0000001 AS $$ BEGIN INSERT INTO pg_temp.loot VALUES (a, b, c); RETURN true; END $$;",
    )
    .await
    .expect("an analyst may create temporary functions");
    rows(
        &c,
        "SELECT count(*) FROM immuta.v WHERE pg_temp.leak(id::text, email, region)",
    )
    .await
    .expect("leaky query");
    let loot = rows(&c, "SELECT id, email, region FROM pg_temp.loot")
        .await
        .expect("loot");
    for stolen in &loot {
        assert!(
            shown.contains(stolen),
            "{what}: the analyst's function saw {stolen:?}, which the view does not show ({shown:?})"
        );
    }
    for (column, at) in [("email", 1), ("region", 2)] {
        let sql = format!("SELECT id FROM immuta.v WHERE {column}::int = 0");
        let Err(e) = rows(&c, &sql).await else {
            continue;
        };
        let message = e
            .as_db_error()
            .map(|d| d.message().to_string())
            .unwrap_or_default();
        let leaked = message
            .split('"')
            .nth(1)
            .unwrap_or_else(|| panic!("{what}: unexpected error {e:?}"));
        assert!(
            shown.iter().any(|r| r[at].as_deref() == Some(leaked)),
            "{what}: a failing cast on {column} showed {leaked:?}, which the view does not show"
        );
    }
}

async fn run_case(case: Case) {
    let mut env = Direct::new(RAW).await;
    let mut users = Vec::new();
    for _ in 0..3 {
        users.push(env.db.role("analyst", true).await);
    }
    let mut first = vec![record(
        &Ev::Source(1, Status::Active, TAGS),
        &env.db.name,
        &users,
    )];
    for (n, phase) in case.phases.into_iter().enumerate() {
        first.extend(phase.events.iter().map(|e| record(e, &env.db.name, &users)));
        env.apply(&std::mem::take(&mut first)).await;
        for (i, want) in phase.expect.into_iter().enumerate() {
            let got = env.db.rows_as(&users[i], Q).await.ok();
            let want = want.map(|rows| {
                rows.into_iter()
                    .map(|(id, e, r)| vec![s(id), e, r.map(String::from)])
                    .collect::<Vec<_>>()
            });
            if let Some(shown) = &want {
                probe(
                    &env.db,
                    &users[i],
                    shown,
                    &format!("case {:?}, phase {n}, user {i}", case.name),
                )
                .await;
            }
            assert_eq!(got, want, "case {:?}, phase {n}, user {i}", case.name);
        }
    }
    assert!(
        env.dead.0.lock().unwrap().is_empty(),
        "case {:?}: unexpected dead letters",
        case.name
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rule_exception_and_lifecycle_case() {
    for case in cases() {
        run_case(case).await;
    }
}
