//! The records of a workload: profiles with groups and attributes from small pools,
//! data sources over their raw tables, policies that target them, and the change stream
//! in which a few hot users take most of the updates.

use crate::event::{
    Column, DataSource, Event, Exceptions, Impersonation, Kind, Mask, MaskMethod, Policy, Project,
    RowFilter, RowFilterKind, Rule, Status, Target, UserProfile,
};
use std::collections::{BTreeMap, HashMap};

use super::{ds_id, table_name, user_name, Record, Spec};

const GROUPS: [&str; 5] = ["analysts", "finance", "hr", "eng", "privacy_officers"];
const REGIONS: [&str; 3] = ["eu", "us", "apac"];
const DEPARTMENTS: [&str; 3] = ["sales", "finance", "eng"];
const DS_TAGS: [&str; 3] = ["sales", "finance", "hr"];

pub(super) struct Gen {
    pub(super) rng: fastrand::Rng,
    spec: Spec,
    versions: HashMap<(Kind, String), i64>,
}

impl Gen {
    pub(super) fn new(spec: &Spec) -> Self {
        Gen {
            rng: fastrand::Rng::with_seed(spec.seed),
            spec: spec.clone(),
            versions: HashMap::new(),
        }
    }

    fn next_version(&mut self, kind: Kind, key: &str) -> i64 {
        let v = self.versions.entry((kind, key.to_string())).or_insert(0);
        *v += 1;
        *v
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.rng.usize(..items.len())]
    }

    pub(super) fn profile(&mut self, i: usize) -> Record {
        let user = user_name(i);
        let version = self.next_version(Kind::Profile, &user);
        let mut groups = vec!["analysts".to_string()];
        if self.rng.f64() < 0.3 {
            groups.push(self.pick(&GROUPS).to_string());
        }
        groups.dedup();
        let attributes = BTreeMap::from([
            ("region".to_string(), vec![self.pick(&REGIONS).to_string()]),
            (
                "department".to_string(),
                vec![self.pick(&DEPARTMENTS).to_string()],
            ),
        ]);
        let current_project = (self.rng.f64() < 0.2).then(|| Project {
            id: "fraud-review".into(),
            purposes: vec!["fraud".into()],
        });
        let acknowledged_purposes = if self.rng.bool() {
            vec!["fraud".to_string()]
        } else {
            vec![]
        };
        let data_sources = self.granted_data_sources();
        let value = UserProfile {
            user: user.clone(),
            version,
            groups,
            attributes,
            current_project,
            acknowledged_purposes,
            data_sources,
        };
        Record {
            kind: Kind::Profile,
            key: user,
            value: Some(Event::Profile(value)),
        }
    }

    /// About 60% of the data sources when there are few; about a dozen when there are
    /// many (a user is not granted thousands of tables one by one).
    fn granted_data_sources(&mut self) -> Vec<String> {
        const MANY: usize = 20;
        let n = self.spec.data_sources;
        if n <= MANY {
            return (0..n).filter(|_| self.rng.f64() < 0.6).map(ds_id).collect();
        }
        let mut picked: Vec<usize> = (0..12).map(|_| self.rng.usize(..n)).collect();
        picked.sort_unstable();
        picked.dedup();
        picked.into_iter().map(ds_id).collect()
    }

    /// A data-source tag: one of three when there are few data sources; with many, a
    /// domain of about 100 data sources, so that a tag policy covers a domain rather than
    /// a third of the warehouse. `of` is the data source's index, None for a policy target.
    fn data_source_tag(&mut self, of: Option<usize>) -> String {
        const DOMAIN: usize = 100;
        let n = self.spec.data_sources;
        if n <= 20 {
            return self.pick(&DS_TAGS).to_string();
        }
        let domain = of.unwrap_or_else(|| self.rng.usize(..n)) / DOMAIN;
        format!("domain_{domain:03}")
    }

    pub(super) fn data_source(&mut self, i: usize, status: Status) -> Record {
        let id = ds_id(i);
        let version = self.next_version(Kind::DataSource, &id);
        let col = |name: &str, ty: &str, tags: &[&str]| Column {
            name: name.into(),
            data_type: ty.into(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
        };
        let tag = self.data_source_tag(Some(i));
        let ds = DataSource {
            id: id.clone(),
            version,
            host: self.spec.host.clone(),
            database: self.spec.database.clone(),
            schema: self.spec.raw_schema.clone(),
            table: table_name(i),
            view_name: format!("sim_v{i:04}"),
            columns: vec![
                col("id", "integer", &[]),
                col("email", "text", &["pii"]),
                col("region", "text", &["geo"]),
                col("department", "text", &["dept"]),
                col("amount", "numeric", &[]),
            ],
            tags: vec![tag],
            status,
        };
        Record {
            kind: Kind::DataSource,
            key: id,
            value: Some(Event::DataSource(ds)),
        }
    }

    pub(super) fn policy(&mut self, i: usize, status: Status) -> Record {
        let id = format!("sim-pol-{i:04}");
        let version = self.next_version(Kind::Policy, &id);
        let rule = match self.rng.usize(..5) {
            0 => Rule::Mask(Mask {
                column_tag: "pii".into(),
                method: MaskMethod::Hash,
                constant: None,
            }),
            1 => Rule::Mask(Mask {
                column_tag: "pii".into(),
                method: MaskMethod::Constant,
                constant: Some("REDACTED".into()),
            }),
            2 => Rule::Mask(Mask {
                column_tag: "dept".into(),
                method: MaskMethod::Nullify,
                constant: None,
            }),
            3 => Rule::RowFilter(RowFilter {
                kind: RowFilterKind::MatchingAttribute,
                column_tag: Some("geo".into()),
                attribute: Some("region".into()),
                group: None,
            }),
            _ => Rule::RowFilter(RowFilter {
                kind: RowFilterKind::MemberOfGroup,
                column_tag: None,
                attribute: None,
                group: Some(self.pick(&GROUPS).into()),
            }),
        };
        let target = if self.rng.bool() {
            Target {
                data_source_ids: vec![],
                tags: vec![self.data_source_tag(None)],
            }
        } else {
            let n = self.spec.data_sources.max(1);
            Target {
                data_source_ids: (0..3).map(|_| ds_id(self.rng.usize(..n))).collect(),
                tags: vec![],
            }
        };
        let exceptions = Exceptions {
            groups: if self.rng.f64() < 0.5 {
                vec!["privacy_officers".into()]
            } else {
                vec![]
            },
            purposes: if self.rng.f64() < 0.3 {
                vec!["fraud".into()]
            } else {
                vec![]
            },
        };
        Record {
            kind: Kind::Policy,
            key: id.clone(),
            value: Some(Event::Policy(Policy {
                id,
                version,
                status,
                target,
                rule,
                exceptions,
            })),
        }
    }

    pub(super) fn change(&mut self) -> Record {
        let roll = self.rng.f64();
        let s = &self.spec;
        let (users, dss, pols) = (s.users.max(1), s.data_sources, s.policies);
        if roll < 0.03 {
            let user = user_name(self.rng.usize(..users));
            return Record {
                kind: Kind::Profile,
                key: user,
                value: None,
            };
        }
        if roll < 0.06 && dss > 0 {
            let status = if self.rng.f64() < 0.3 {
                Status::Disabled
            } else {
                Status::Active
            };
            let i = self.rng.usize(..dss);
            return self.data_source(i, status);
        }
        if roll < 0.09 && pols > 0 {
            let status = if self.rng.f64() < 0.2 {
                Status::Disabled
            } else {
                Status::Active
            };
            let i = self.rng.usize(..pols);
            return self.policy(i, status);
        }
        if roll < 0.10 && s.impersonation {
            let user = user_name(self.rng.usize(..users));
            let version = self.next_version(Kind::Impersonation, &user);
            let allowed = self.rng.bool();
            return Record {
                kind: Kind::Impersonation,
                key: user.clone(),
                value: Some(Event::Impersonation(Impersonation {
                    user,
                    version,
                    allowed,
                })),
            };
        }
        let hot = self.spec.hot_users.clamp(1, users);
        let i = if self.rng.f64() < self.spec.hot_share {
            self.rng.usize(..hot)
        } else {
            self.rng.usize(..users)
        };
        self.profile(i)
    }
}
