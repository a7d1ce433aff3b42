//! Property test: for random policies and profiles, the rows each real login role gets
//! from PostgreSQL equal those of an in-memory model of SPEC §4, written here
//! independently of the view generator.

mod common;

use std::cell::Cell;
use std::collections::BTreeMap;

use common::*;
use policy_push::event::*;
use policy_push::simulate::Record;
use proptest::prelude::*;
use proptest::sample::{select, subsequence};
use proptest::test_runner::{Config as RunnerConfig, TestRunner};

const GROUPS: &[&str] = &["g1", "g2", "g3"];
const REGIONS: &[&str] = &["eu", "us", "apac"];
const DEPTS: &[&str] = &["sales", "eng"];
const PURPOSES: &[&str] = &["fraud", "audit"];
const DS_IDS: &[&str] = &["ds1", "ds2"];
const DS_TAGS: &[&str] = &["sales", "hr", "geo", "nosuch"];
const MASK_TAGS: &[&str] = &["pii", "geo", "dept", "nosuch"];
const FILTER_TAGS: &[&str] = &["geo", "dept", "nosuch"];
const ATTRS: &[&str] = &["region", "dept", "missing"];

/// The raw table: id, email [pii], region [geo], home [geo], dept [dept], amount.
const RAW: &str = "
CREATE SCHEMA raw;
CREATE TABLE raw.t (id integer, email text, region text, home text, dept text, amount integer);
INSERT INTO raw.t VALUES
  (1, 'a@x', 'eu', 'eu', 'sales', 10),
  (2, 'b@x', 'us', 'eu', 'eng', 20),
  (3, NULL, 'eu', NULL, 'sales', NULL),
  (4, 'd@x', 'apac', 'apac', NULL, 40),
  (5, 'e@x', 'us', 'us', 'sales', 50);
";

type Row = Vec<Option<String>>;

fn raw_rows() -> Vec<BTreeMap<&'static str, Option<String>>> {
    let s = |v: &str| Some(v.to_string());
    let rows: Vec<[Option<String>; 6]> = vec![
        [s("1"), s("a@x"), s("eu"), s("eu"), s("sales"), s("10")],
        [s("2"), s("b@x"), s("us"), s("eu"), s("eng"), s("20")],
        [s("3"), None, s("eu"), None, s("sales"), None],
        [s("4"), s("d@x"), s("apac"), s("apac"), None, s("40")],
        [s("5"), s("e@x"), s("us"), s("us"), s("sales"), s("50")],
    ];
    let names = ["id", "email", "region", "home", "dept", "amount"];
    rows.into_iter()
        .map(|r| names.iter().copied().zip(r).collect())
        .collect()
}

fn data_sources(db: &str) -> Vec<DataSource> {
    let col = |n: &str, tags: &[&str]| Column {
        name: n.into(),
        data_type: "text".into(),
        tags: strings(tags),
    };
    let ds = |id: &str, view: &str, tags: &[&str], cols: Vec<Column>| DataSource {
        id: id.into(),
        version: 1,
        host: HOST.into(),
        database: db.into(),
        schema: "raw".into(),
        table: "t".into(),
        view_name: view.into(),
        columns: cols,
        tags: strings(tags),
        status: Status::Active,
    };
    vec![
        ds(
            "ds1",
            "v1",
            &["sales"],
            vec![
                col("id", &[]),
                col("email", &["pii"]),
                col("region", &["geo"]),
                col("home", &["geo"]),
                col("dept", &["dept"]),
                col("amount", &[]),
            ],
        ),
        ds(
            "ds2",
            "v2",
            &["hr"],
            vec![col("id", &[]), col("region", &["geo"]), col("amount", &[])],
        ),
    ]
}

// ---- the model ------------------------------------------------------------------------

fn targets(p: &Policy, ds: &DataSource) -> bool {
    p.status == Status::Active
        && (p.target.data_source_ids.contains(&ds.id)
            || p.target
                .tags
                .iter()
                .any(|t| ds.tags.contains(t) || ds.columns.iter().any(|c| c.tags.contains(t))))
}

fn exempt(p: &Policy, u: &UserProfile) -> bool {
    let by_group = p.exceptions.groups.iter().any(|g| u.groups.contains(g));
    let by_purpose = u.current_project.as_ref().is_some_and(|proj| {
        proj.purposes
            .iter()
            .any(|x| p.exceptions.purposes.contains(x) && u.acknowledged_purposes.contains(x))
    });
    by_group || by_purpose
}

fn model(ds: &DataSource, policies: &[Policy], user: Option<&UserProfile>) -> Vec<Row> {
    let Some(u) = user else { return vec![] };
    if !u.data_sources.contains(&ds.id) {
        return vec![];
    }
    let mut applicable: Vec<&Policy> = policies.iter().filter(|p| targets(p, ds)).collect();
    applicable.sort_by(|a, b| a.id.cmp(&b.id));
    let tagged = |tag: &str| {
        ds.columns
            .iter()
            .filter(|c| c.tags.iter().any(|t| t == tag))
            .map(|c| c.name.clone())
            .collect::<Vec<_>>()
    };
    let mut out = Vec::new();
    'rows: for raw in raw_rows() {
        for p in &applicable {
            let Rule::RowFilter(f) = &p.rule else {
                continue;
            };
            let passes = match f.kind {
                RowFilterKind::MemberOfGroup => u.groups.contains(f.group.as_ref().unwrap()),
                RowFilterKind::MatchingAttribute => {
                    let cols = tagged(f.column_tag.as_deref().unwrap());
                    if cols.is_empty() {
                        continue; // the rule does not apply to this data source
                    }
                    let allowed = u
                        .attributes
                        .get(f.attribute.as_deref().unwrap())
                        .cloned()
                        .unwrap_or_default();
                    cols.iter().all(|c| {
                        raw[c.as_str()]
                            .as_ref()
                            .is_some_and(|v| allowed.contains(v))
                    })
                }
            };
            if !passes && !exempt(p, u) {
                continue 'rows;
            }
        }
        let shown = ds
            .columns
            .iter()
            .map(|c| {
                let value = raw[c.name.as_str()].clone();
                let mask = applicable.iter().find_map(|p| match &p.rule {
                    Rule::Mask(m) if c.tags.contains(&m.column_tag) && !exempt(p, u) => Some(m),
                    _ => None,
                });
                match mask {
                    None => value,
                    Some(m) => match m.method {
                        MaskMethod::Nullify => None,
                        MaskMethod::Constant => m.constant.clone(),
                        MaskMethod::Hash => value.map(|v| sha256_hex(&v)),
                    },
                }
            })
            .collect();
        out.push(shown);
    }
    out
}

// ---- generators -----------------------------------------------------------------------

fn subset(items: &'static [&'static str]) -> impl Strategy<Value = Vec<String>> {
    subsequence(items.to_vec(), 0..=items.len())
        .prop_map(|v| v.into_iter().map(String::from).collect())
}

fn profile_strategy() -> impl Strategy<Value = Option<UserProfile>> {
    let fields = (
        subset(GROUPS),
        proptest::option::of(subset(REGIONS)),
        proptest::option::of(subset(DEPTS)),
        proptest::option::of(subset(PURPOSES)),
        subset(PURPOSES),
        subset(DS_IDS),
    );
    proptest::option::weighted(0.85, fields).prop_map(|o| {
        o.map(|(groups, regions, depts, project, acknowledged, sources)| {
            let mut attributes = BTreeMap::new();
            if let Some(r) = regions {
                attributes.insert("region".to_string(), r);
            }
            if let Some(d) = depts {
                attributes.insert("dept".to_string(), d);
            }
            UserProfile {
                user: String::new(),
                version: 0,
                groups,
                attributes,
                current_project: project.map(|purposes| Project {
                    id: "proj".into(),
                    purposes,
                }),
                acknowledged_purposes: acknowledged,
                data_sources: sources,
            }
        })
    })
}

fn rule_strategy() -> impl Strategy<Value = Rule> {
    let method = select(vec![
        MaskMethod::Hash,
        MaskMethod::Nullify,
        MaskMethod::Constant,
    ]);
    // Masks are weighted up so that several of them often compete for one column.
    prop_oneof![
        3 => (select(MASK_TAGS), method).prop_map(|(tag, method)| Rule::Mask(Mask {
            column_tag: tag.into(),
            method,
            constant: (method == MaskMethod::Constant).then(|| "C".to_string()),
        })),
        1 => (select(FILTER_TAGS), select(ATTRS)).prop_map(|(tag, attr)| Rule::RowFilter(RowFilter {
            kind: RowFilterKind::MatchingAttribute,
            column_tag: Some(tag.into()),
            attribute: Some(attr.into()),
            group: None,
        })),
        1 => select(GROUPS).prop_map(|g| Rule::RowFilter(RowFilter {
            kind: RowFilterKind::MemberOfGroup,
            column_tag: None,
            attribute: None,
            group: Some(g.into()),
        })),
    ]
}

fn policy_strategy() -> impl Strategy<Value = Policy> {
    (
        proptest::bool::weighted(0.85),
        subset(DS_IDS),
        subset(DS_TAGS),
        rule_strategy(),
        subset(GROUPS),
        subset(PURPOSES),
    )
        .prop_map(|(active, ids, tags, rule, ex_groups, ex_purposes)| Policy {
            id: String::new(),
            version: 0,
            status: if active {
                Status::Active
            } else {
                Status::Disabled
            },
            target: Target {
                data_source_ids: ids,
                tags,
            },
            rule,
            exceptions: Exceptions {
                groups: ex_groups,
                purposes: ex_purposes,
            },
        })
}

#[derive(Debug, Clone)]
struct Case {
    profiles: Vec<Option<UserProfile>>,
    policies: Vec<Policy>,
}

fn case_strategy() -> impl Strategy<Value = Case> {
    (
        proptest::collection::vec(profile_strategy(), 3),
        proptest::collection::vec(policy_strategy(), 0..6),
    )
        .prop_map(|(profiles, policies)| Case { profiles, policies })
}

// ---- the property ---------------------------------------------------------------------

struct World {
    env: Direct,
    users: Vec<String>,
    clients: Vec<tokio_postgres::Client>,
    sources: Vec<DataSource>,
    /// Versions only grow, so every case is an update over the previous one.
    version: Cell<i64>,
}

impl World {
    /// Publishes the case as changes over whatever the previous case left behind.
    async fn load(&self, case: &Case) -> (Vec<Policy>, Vec<Option<UserProfile>>) {
        let version = self.version.get() + 1;
        self.version.set(version);
        let mut events = Vec::new();
        let mut policies = Vec::new();
        for i in 0..6 {
            let id = format!("pol{i}");
            match case.policies.get(i) {
                Some(p) => {
                    let p = Policy {
                        id,
                        version,
                        ..p.clone()
                    };
                    events.push(Record {
                        kind: Kind::Policy,
                        key: p.id.clone(),
                        value: Some(Event::Policy(p.clone())),
                    });
                    policies.push(p);
                }
                None => events.push(tombstone(Kind::Policy, &id)),
            }
        }
        let mut profiles = Vec::new();
        for (user, p) in self.users.iter().zip(&case.profiles) {
            match p {
                Some(p) => {
                    let p = UserProfile {
                        user: user.clone(),
                        version,
                        ..p.clone()
                    };
                    events.push(Record {
                        kind: Kind::Profile,
                        key: user.clone(),
                        value: Some(Event::Profile(p.clone())),
                    });
                    profiles.push(Some(p));
                }
                None => {
                    events.push(tombstone(Kind::Profile, user));
                    profiles.push(None);
                }
            }
        }
        self.env.apply(&events).await;
        (policies, profiles)
    }

    async fn check(&self, case: &Case) -> Result<(), TestCaseError> {
        let (policies, profiles) = self.load(case).await;
        for ds in &self.sources {
            let cols: Vec<&str> = ds.columns.iter().map(|c| c.name.as_str()).collect();
            let sql = format!(
                "SELECT {} FROM immuta.{} ORDER BY id",
                cols.join(", "),
                ds.view_name
            );
            for (i, client) in self.clients.iter().enumerate() {
                let got = rows(client, &sql)
                    .await
                    .map_err(|e| TestCaseError::fail(format!("{sql}: {e}")))?;
                let want = model(ds, &policies, profiles[i].as_ref());
                prop_assert_eq!(
                    &got,
                    &want,
                    "view {} as user {} ({:?})",
                    ds.view_name,
                    i,
                    profiles[i]
                );
            }
        }
        Ok(())
    }
}

async fn world() -> World {
    let mut env = Direct::new(RAW).await;
    let mut users = Vec::new();
    for _ in 0..3 {
        users.push(env.db.role("analyst", true).await);
    }
    let mut clients = Vec::new();
    for u in &users {
        clients.push(env.db.as_role(u).await);
    }
    let sources = data_sources(&env.db.name);
    let records: Vec<Record> = sources
        .iter()
        .map(|d| Record {
            kind: Kind::DataSource,
            key: d.id.clone(),
            value: Some(Event::DataSource(d.clone())),
        })
        .collect();
    env.apply(&records).await;
    World {
        env,
        users,
        clients,
        sources,
        version: Cell::new(1),
    }
}

#[test]
fn views_match_the_policy_model() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let world = rt.block_on(world());
    let cases = std::env::var("POLICY_MODEL_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(128);
    let mut runner = TestRunner::new(RunnerConfig {
        cases,
        failure_persistence: None,
        ..RunnerConfig::default()
    });
    let result = runner.run(&case_strategy(), |case| rt.block_on(world.check(&case)));
    let db_name = world.env.db.name.clone();
    rt.block_on(async move { drop(world) });
    if let Err(e) = result {
        panic!("policy model mismatch (database {db_name}): {e}");
    }
}
