//! Whether a data source's raw table can back its view: it exists, the system role can
//! see it, and it has every column the data source names and none the view adds; and
//! the catalog's type of each column, which decides its canonical text
//! (`apply::sql::canonical`).

use std::collections::HashMap;

use super::Rebuild;
use crate::apply::sql::canonical::ColumnTypes;
use crate::apply::ApplyError;
use crate::event::DataSource;

/// The raw table's column types, or why a raw table with these readable columns cannot
/// back the data source's view.
fn column_problem(ds: &DataSource, present: Option<&ColumnTypes>) -> Result<ColumnTypes, String> {
    let Some(present) = present.filter(|p| !p.is_empty()) else {
        return Err(format!(
            "raw table {}.{} does not exist or the system role cannot see it",
            ds.schema, ds.table
        ));
    };
    let missing: Vec<&str> = ds
        .columns
        .iter()
        .map(|c| c.name.as_str())
        .filter(|c| !present.contains_key(*c))
        .collect();
    if missing.is_empty() {
        return Ok(present.clone());
    }
    Err(format!(
        "raw table {}.{} has no column(s) {}",
        ds.schema,
        ds.table,
        missing.join(", ")
    ))
}

impl Rebuild<'_, '_> {
    /// The types of the raw table's columns, or why it cannot back this data source's
    /// view.
    pub(super) async fn raw_columns(
        &self,
        ds: &DataSource,
    ) -> Result<Result<ColumnTypes, String>, ApplyError> {
        let reserved = self.dialect().reserved_column();
        if let Some(c) = ds
            .columns
            .iter()
            .find(|c| Some(c.name.as_str()) == reserved)
        {
            return Ok(Err(format!(
                "raw table {}.{} has a column named {}, which the view adds (row-level security)",
                ds.schema, ds.table, c.name
            )));
        }
        if let Some(known) = &self.columns {
            let key = (ds.schema.clone(), ds.table.clone());
            return Ok(column_problem(ds, known.get(&key)));
        }
        let columns = self
            .tx
            .prepare_cached(self.dialect().columns_query())
            .await?;
        let rows = self.tx.query(&columns, &[&ds.schema, &ds.table]).await?;
        let present: ColumnTypes = rows
            .iter()
            .map(|r| Ok((r.try_get::<_, String>(0)?, r.try_get(1)?)))
            .collect::<Result<_, tokio_postgres::Error>>()?;
        Ok(column_problem(ds, Some(&present)))
    }

    /// PostgreSQL: looks up the columns of every raw table behind `sources` at once.
    pub(super) async fn prefetch_columns<'d>(
        &mut self,
        sources: impl Iterator<Item = &'d DataSource>,
    ) -> Result<(), ApplyError> {
        let Some(query) = self.dialect().columns_of_tables() else {
            return Ok(());
        };
        let (schemas, tables): (Vec<&str>, Vec<&str>) = sources
            .map(|d| (d.schema.as_str(), d.table.as_str()))
            .unzip();
        if schemas.is_empty() {
            return Ok(());
        }
        let query = self.tx.prepare_cached(query).await?;
        let mut known: HashMap<(String, String), ColumnTypes> = HashMap::new();
        for row in self.tx.query(&query, &[&schemas, &tables]).await? {
            known
                .entry((row.try_get(0)?, row.try_get(1)?))
                .or_default()
                .insert(row.try_get(2)?, row.try_get(3)?);
        }
        self.columns = Some(known);
        Ok(())
    }
}
